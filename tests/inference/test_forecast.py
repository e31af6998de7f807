from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from retail_forecast.core import features as feat
from retail_forecast.core.data import Panel
from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.app import create_app
from retail_forecast.inference.forecast import ForecastInputError, HistoryPoint, SeriesRequest, _check_series
from retail_forecast.inference.limits import DEFAULT_MAX_HISTORY_PERIODS, Limits
from retail_forecast.inference.model import load_model

from .conftest import wait_ready


def series_payload(panel: Panel, s: int, origin: int, history: int, horizon: int) -> dict[str, Any]:
    def covariates(t: int) -> dict[str, Any]:
        point: dict[str, Any] = {"date": str(panel.dates[t].date()), "promo": int(panel.promo[s, t])}
        if not np.isnan(panel.price[s, t]):
            point["price"] = float(panel.price[s, t])
        if panel.event[s, t]:
            point["event"] = "holiday"
        return point

    return {
        "store_id": str(panel.store_ids[s]),
        "item_id": str(panel.item_ids[s]),
        "history": [
            {**covariates(t), "sales": float(panel.sales[s, t])}
            for t in range(origin - history + 1, origin + 1)
        ],
        "future": [covariates(t) for t in range(origin + 1, origin + horizon + 1)],
    }


def test_service_forecasts_equal_the_training_pipeline(
    client: TestClient, model_dir: Path, sales_panel: Panel
) -> None:
    """Same series, same origin: the API's forecasts are the training features scored by the model."""
    manifest = Manifest.load(model_dir)
    model = load_model(model_dir)
    spec = feat.spec_for(sales_panel.freq)
    valid = feat.valid_origins(sales_panel, spec)
    horizon = manifest.horizon
    cases = [(s, o) for s, o in [(0, 150), (3, 200), (7, sales_panel.n_periods - horizon - 1)] if valid[s, o]]
    assert len(cases) == 3
    payload = {
        "series": [series_payload(sales_panel, s, o, manifest.min_history + 5, horizon) for s, o in cases]
    }
    response = client.post("/v1/forecast", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "demand", "version": "7"}
    for (s, o), result in zip(cases, body["forecasts"], strict=True):
        h = np.arange(1, horizon + 1)
        rows = feat.build_features(sales_panel, np.full(horizon, s), np.full(horizon, o), h, spec)
        expected = model.predict_all(rows)
        assert result["store_id"] == sales_panel.store_ids[s]
        assert [p["date"] for p in result["points"]] == [
            str(d.date()) for d in sales_panel.dates[o + 1 : o + horizon + 1]
        ]
        np.testing.assert_array_equal(
            np.array([p["yhat"] for p in result["points"]], dtype=np.float32), expected[:, 0]
        )
        assert [list(p["quantiles"]) for p in result["points"]] == [["0.1", "0.5", "0.9"]] * horizon
        quantiles = np.array([list(p["quantiles"].values()) for p in result["points"]], dtype=np.float32)
        np.testing.assert_array_equal(quantiles, expected[:, 1:])
        assert (np.diff(quantiles, axis=1) >= 0).all() and quantiles[:, 2].sum() > quantiles[:, 0].sum()


def test_a_model_without_quantiles_answers_points_without_them(
    point_model_dir: Path, sales_panel: Panel
) -> None:
    manifest = Manifest.load(point_model_dir)
    assert manifest.quantiles is None
    payload = {"series": [series_payload(sales_panel, 2, 180, manifest.min_history, manifest.horizon)]}
    with TestClient(create_app(point_model_dir)) as point_client:
        wait_ready(point_client)
        response = point_client.post("/v1/forecast", json=payload)
    assert response.status_code == 200, response.text
    points = response.json()["forecasts"][0]["points"]
    assert len(points) == manifest.horizon
    assert all(set(p) == {"date", "yhat"} for p in points)


def test_the_openapi_schema_documents_the_quantiles(client: TestClient) -> None:
    point = client.get("/openapi.json").json()["components"]["schemas"]["ForecastPoint"]
    assert "quantiles" in point["properties"] and "quantiles" not in point.get("required", [])
    assert "only from a model with quantile outputs" in point["properties"]["quantiles"]["description"]


def test_shorter_horizon_and_missing_future_covariates(
    client: TestClient, model_dir: Path, sales_panel: Panel
) -> None:
    manifest = Manifest.load(model_dir)
    series = series_payload(sales_panel, 1, 180, manifest.min_history, 3)
    series["future"] = []
    response = client.post("/v1/forecast", json={"series": [series], "horizon": 3})
    assert response.status_code == 200, response.text
    (result,) = response.json()["forecasts"]
    assert len(result["points"]) == 3
    assert all(p["yhat"] >= 0 for p in result["points"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["history"].pop(0), "history covers"),
        (lambda s: s["history"].__setitem__(3, dict(s["history"][2])), "is not after"),
        (lambda s: s["history"][5].update(date="2031-01-01"), "is not after"),
        (lambda s: s["future"][0].update(date="1999-01-01"), "future[0].date"),
        (lambda s: s["future"].__setitem__(1, dict(s["future"][0])), "or is repeated"),
        (
            lambda s: s["future"].append(dict(s["future"][0])),
            "future holds 5 points; a 4-period forecast takes at most 4",
        ),
        (lambda s: s["history"][0].update(sales="many"), "history.0.sales"),
        (lambda s: s["history"][0].update(price=-1), "history.0.price"),
        (lambda s: s.update(store_id=" padded"), "store_id"),
    ],
)
def test_bad_series_are_422_naming_series_and_field(
    client: TestClient, model_dir: Path, sales_panel: Panel, change: Any, message: str
) -> None:
    manifest = Manifest.load(model_dir)
    series = series_payload(sales_panel, 2, 170, manifest.min_history, 4)
    change(series)
    response = client.post("/v1/forecast", json={"series": [series], "horizon": 4})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert message in error


def test_dates_off_a_weekly_models_grid_are_refused(model_dir: Path) -> None:
    weekly = Manifest.load(model_dir).model_copy(update={"freq": "W", "min_history": 3, "horizon": 2})
    start = dt.date(2024, 1, 1)
    history = [HistoryPoint(date=start + dt.timedelta(days=d), sales=1.0) for d in (0, 7, 15)]
    series = SeriesRequest(store_id="s", item_id="i", history=history)
    with pytest.raises(ForecastInputError, match=r"history\[2\].date 2024-01-16 is 8 days after .* weekly"):
        _check_series(0, series, weekly, horizon=2, max_history_periods=3)
    history[2] = HistoryPoint(date=start + dt.timedelta(days=14), sales=1.0)
    _check_series(
        0, SeriesRequest(store_id="s", item_id="i", history=history), weekly, horizon=2, max_history_periods=3
    )


def test_beyond_model_horizon_and_duplicates(client: TestClient, sales_panel: Panel, model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    series = series_payload(sales_panel, 2, 170, manifest.min_history, 1)
    response = client.post("/v1/forecast", json={"series": [series], "horizon": manifest.horizon + 1})
    assert response.status_code == 422 and "beyond the model's horizon" in response.json()["error"]
    response = client.post("/v1/forecast", json={"series": [series, series], "horizon": 1})
    assert response.status_code == 422 and "appears twice" in response.json()["error"]


# The limits: each is checked before the work it bounds, and each refusal names its limit.
SMALL_BODY: Final = 200_000


@pytest.fixture(scope="module")
def small_limits(model_dir: Path) -> Limits:
    return Limits(
        max_forecast_series=2,
        max_history_periods=Manifest.load(model_dir).min_history + 5,
        max_forecast_bytes=SMALL_BODY,
    )


@pytest.fixture
def small_client(model_dir: Path, small_limits: Limits) -> Iterator[TestClient]:
    with TestClient(create_app(model_dir, limits=small_limits)) as test_client:
        wait_ready(test_client)
        yield test_client


def test_the_sparse_date_attack_is_refused_before_the_panel_is_built(client: TestClient) -> None:
    """The issue's attack: 3 points a series, 250 years apart, would make a 40 x 91,312 panel."""
    history = [{"date": d, "sales": 1.0} for d in ("1900-01-01", "1900-01-02", "2150-01-01")]
    series = [{"store_id": "s", "item_id": f"i{k}", "history": history} for k in range(40)]
    response = client.post("/v1/forecast", json={"series": series})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == (
        "series[0] (s, i0): history spans 91312 periods from 1900-01-01 to 2150-01-01; "
        f"the limit is {DEFAULT_MAX_HISTORY_PERIODS} (the model reads the last 56)"
    )


def test_series_far_apart_in_time_are_refused_together(
    small_client: TestClient, small_limits: Limits, model_dir: Path, sales_panel: Panel
) -> None:
    """Each series is short, but the panel spans the dates of all of them."""
    history = Manifest.load(model_dir).min_history
    early, late = (
        series_payload(sales_panel, 0, 100, history, 0),
        series_payload(sales_panel, 1, 200, history, 0),
    )
    response = small_client.post("/v1/forecast", json={"series": [early, late]})
    assert response.status_code == 422, response.text
    span = 200 - 100 + history
    assert f"their histories together span {span} periods" in response.json()["error"]
    assert f"the limit is {small_limits.max_history_periods}" in response.json()["error"]


def test_requests_at_the_limits_are_served(
    small_client: TestClient, small_limits: Limits, sales_panel: Panel
) -> None:
    periods = small_limits.max_history_periods
    series = [
        series_payload(sales_panel, s, 200, periods, 0) for s in range(small_limits.max_forecast_series)
    ]
    response = small_client.post("/v1/forecast", json={"series": series})
    assert response.status_code == 200, response.text
    assert len(response.json()["forecasts"]) == small_limits.max_forecast_series


@pytest.mark.parametrize(
    ("n_series", "extra_periods", "message"),
    [
        (3, 0, "series: List should have at most 2 items"),
        (1, 1, "series.0.history: List should have at most"),
    ],
    ids=["series", "history"],
)
def test_lists_over_their_limits_are_413(
    small_client: TestClient,
    small_limits: Limits,
    sales_panel: Panel,
    n_series: int,
    extra_periods: int,
    message: str,
) -> None:
    periods = small_limits.max_history_periods + extra_periods
    body = {"series": [series_payload(sales_panel, s, 200, periods, 0) for s in range(n_series)]}
    response = small_client.post("/v1/forecast", json=body)
    assert response.status_code == 413, response.text
    assert message in response.json()["error"]
    if extra_periods:
        assert f"at most {small_limits.max_history_periods} items" in response.json()["error"]


def test_a_body_over_the_limit_is_refused_unread(small_client: TestClient, sales_panel: Panel) -> None:
    body = orjson.dumps({"series": [series_payload(sales_panel, 0, 200, 60, 0)]})
    padded = body + b" " * (SMALL_BODY - len(body) + 1)
    response = small_client.post("/v1/forecast", content=padded)
    assert response.status_code == 413, response.text
    assert (
        response.json()["error"]
        == f"request body of {SMALL_BODY + 1} bytes exceeds the limit of {SMALL_BODY} bytes"
    )
    assert small_client.post("/v1/forecast", content=padded[:-1]).status_code == 200


def test_the_openapi_schema_shows_the_limits(small_client: TestClient, small_limits: Limits) -> None:
    schemas = small_client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["ForecastRequest"]["properties"]["series"]["maxItems"] == small_limits.max_forecast_series
    assert schemas["SeriesRequest"]["properties"]["history"]["maxItems"] == small_limits.max_history_periods

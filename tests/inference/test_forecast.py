from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from retail_forecast.core import features as feat
from retail_forecast.core.data import Panel
from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.forecast import ForecastInputError, HistoryPoint, SeriesRequest, _check_series
from retail_forecast.inference.model import load_model


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
        expected = model.predict(rows)
        assert result["store_id"] == sales_panel.store_ids[s]
        assert [p["date"] for p in result["points"]] == [
            str(d.date()) for d in sales_panel.dates[o + 1 : o + horizon + 1]
        ]
        np.testing.assert_array_equal(
            np.array([p["yhat"] for p in result["points"]], dtype=np.float32), expected
        )


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
        (lambda s: s["future"].append(dict(s["future"][0])), "or is repeated"),
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
        _check_series(0, series, weekly, horizon=2)
    history[2] = HistoryPoint(date=start + dt.timedelta(days=14), sales=1.0)
    _check_series(0, SeriesRequest(store_id="s", item_id="i", history=history), weekly, horizon=2)


def test_beyond_model_horizon_and_duplicates(client: TestClient, sales_panel: Panel, model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    series = series_payload(sales_panel, 2, 170, manifest.min_history, 1)
    response = client.post("/v1/forecast", json={"series": [series], "horizon": manifest.horizon + 1})
    assert response.status_code == 422 and "beyond the model's horizon" in response.json()["error"]
    response = client.post("/v1/forecast", json={"series": [series, series], "horizon": 1})
    assert response.status_code == 422 and "appears twice" in response.json()["error"]

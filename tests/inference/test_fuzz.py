"""Schemathesis against the service's own OpenAPI: no generated input, valid or not, may cause a 5xx.

The app runs in-process with its real lifespan (schemathesis starts it once), the real ONNX model loaded
and self-checked before any case is sent. Both positive (schema-conforming) and negative (schema-violating)
data are generated; the run is bounded and derandomized so CI sees the same cases every time.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.app import create_app
from retail_forecast.inference.limits import Limits

EXAMPLES_PER_OPERATION = 60
LIMITS = Limits(max_batch_rows=2048)  # the schema shows the limits: the fuzzed and the served app share them
OPERATIONS = {
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2"),
    ("GET", "/v2/models/{name}"),
    ("GET", "/v2/models/{name}/ready"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v1/forecast"),
    ("GET", "/metrics"),
}


# The OpenAPI document is static (create_app reads nothing until its lifespan starts), so the schema is
# built at import for pytest to parametrize; the cases are sent to the fixture's app, with its model ready.
schema = schemathesis.openapi.from_dict(
    create_app(Path("model-loaded-by-the-fixture"), limits=LIMITS).openapi()
)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES_PER_OPERATION,
    deterministic=True,
)


@pytest.fixture(scope="module")
def ready_app(model_dir: Path) -> FastAPI:
    """The real app; schemathesis's ASGI transport runs its lifespan: the model loads and self-checks."""
    app = create_app(model_dir, limits=LIMITS, access_log=False)
    ready = schema["/v2/health/ready"]["GET"]
    deadline = time.monotonic() + 60
    while (response := ready.Case().call(app=app)).status_code != 200:
        assert time.monotonic() < deadline, f"service never became ready: {response.text}"
        time.sleep(0.05)
    return app


def test_the_fuzzed_schema_is_the_served_one_and_covers_every_operation(ready_app: FastAPI) -> None:
    assert ready_app.openapi() == schema.raw_schema
    found = set()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        found.add((result.ok().method.upper(), result.ok().path))
    assert found == OPERATIONS


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_no_input_causes_a_server_error(case: schemathesis.Case[Any], ready_app: FastAPI) -> None:
    response = case.call(app=ready_app)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command()}"
    )
    if 400 <= response.status_code < 500 and case.operation.path.startswith(("/v2/models", "/v1")):
        body: Any = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), response.text


# Inputs the generators cannot reach: /v1/forecast only gets past validation with >= min_history
# consecutive dates, so the calendar's and float's edges are probed by hand.
def _series(end: dt.date, periods: int, **point: Any) -> dict[str, Any]:
    days = [end - dt.timedelta(days=periods - 1 - k) for k in range(periods)]
    history = [{"date": str(d), "sales": 1.0, **point} for d in days]
    return {"store_id": "s", "item_id": "i", "history": history}


@pytest.mark.parametrize(
    ("end", "point", "future", "message"),
    [
        (dt.date(2262, 4, 5), {}, None, "ends beyond 2262-04-11"),
        (dt.date(9999, 12, 31), {}, None, "less than or equal to 2262-04-11"),
        (dt.date(1677, 10, 1), {}, None, "greater than or equal to 1677-09-22"),
        (dt.date(1, 3, 1), {}, None, "greater than or equal to 1677-09-22"),
        (dt.date(2262, 4, 1), {}, "2262-04-12", "less than or equal to 2262-04-11"),
        (dt.date(2024, 1, 31), {"sales": 1e308}, None, "too large to forecast"),
    ],
    ids=["horizon-past-end", "date-max", "before-start", "year-1", "future-past-end", "huge-sales"],
)
def test_forecast_edges_are_refused_not_crashed(
    client: TestClient, model_dir: Path, end: dt.date, point: dict[str, Any], future: str | None, message: str
) -> None:
    series = _series(end, Manifest.load(model_dir).min_history + 2, **point)
    if future is not None:
        series["future"] = [{"date": future}]
    response = client.post("/v1/forecast", json={"series": [series]})
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]


def test_extreme_but_valid_covariates_still_forecast(client: TestClient, model_dir: Path) -> None:
    periods = Manifest.load(model_dir).min_history + 2
    for point in ({"price": 1e308}, {"price": 5e-324}, {"sales": -1e308}):
        series = _series(dt.date(2024, 1, 31), periods, **point)
        response = client.post("/v1/forecast", json={"series": [series]})
        assert response.status_code == 200, (point, response.text)
        assert all(isinstance(p["yhat"], float) for p in response.json()["forecasts"][0]["points"])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/models/demand/infer", 405),
        ("POST", "/v2/models/demand/ready", 405),
        ("POST", "/v2/models/demand/extra/infer", 404),
        ("GET", "/v2/models", 404),
    ],
)
def test_routing_errors_use_the_error_shape(client: TestClient, method: str, path: str, status: int) -> None:
    """DESIGN.md: scoring API errors are {"error": "..."} with a 4xx, routing errors included."""
    response = client.request(method, path)
    assert response.status_code == status
    assert isinstance(response.json().get("error"), str), response.text

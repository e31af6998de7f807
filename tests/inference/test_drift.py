"""Input drift through the real service: a real ONNX model, rows drawn as training draws them, /metrics."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from retail_forecast.core import features as feat
from retail_forecast.core.data import Panel
from retail_forecast.core.drift import MIN_ROWS
from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.app import create_app
from retail_forecast.inference.limits import Limits
from retail_forecast.inference.observability import DRIFT_PSI, DRIFT_ROWS
from retail_forecast.training import rows as rows_

from .conftest import wait_ready
from .live import forecast_series

SHIFTED = "lag_0"


def training_like_rows(panel: Panel, horizon: int, n: int, seed: int) -> npt.NDArray[np.float32]:
    """`n` feature rows drawn as training draws its rows, with another seed: the reference's population."""
    spec = feat.spec_for(panel.freq)
    rng = np.random.default_rng(seed)
    drawn = rows_.draw_rows(panel, feat.valid_origins(panel, spec), horizon, panel.n_periods - 1, 1.0, rng)
    features = rows_.build_features(panel, drawn, spec)
    return features[rng.choice(len(features), size=n, replace=False)]


def drift_of(client: TestClient) -> tuple[float | None, dict[str, float]]:
    """Window rows (None when not reported) and PSI per feature, as a scraper reads them."""
    rows, scores = None, {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == DRIFT_ROWS:
                rows = sample.value
            if sample.name == DRIFT_PSI:
                scores[sample.labels["feature"]] = sample.value
    return rows, scores


def send(client: TestClient, rows: npt.NDArray[np.float32]) -> None:
    for part in np.array_split(rows, 2):
        body = {
            "inputs": [
                {"name": "features", "shape": list(part.shape), "datatype": "FP32", "data": part.tolist()}
            ]
        }
        assert client.post("/v2/models/demand/infer", json=body).status_code == 200


@pytest.fixture
def serve(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(model_dir, limits=Limits(max_batch_rows=2048))) as client:
        wait_ready(client)
        yield client


def test_inputs_like_training_score_low_on_every_feature(
    serve: TestClient, model_dir: Path, sales_panel: Panel
) -> None:
    manifest = Manifest.load(model_dir)
    assert drift_of(serve) == (0.0, {})  # reported from the start, scored once there are enough rows
    send(serve, training_like_rows(sales_panel, manifest.horizon, 3000, seed=1))
    rows, scores = drift_of(serve)
    assert rows == 3000
    assert manifest.drift_reference is not None
    assert set(scores) == {f.name for f in manifest.drift_reference.features}
    assert max(scores.values()) < 0.1, scores


def test_a_shifted_feature_raises_its_gauge_and_no_other(
    serve: TestClient, model_dir: Path, sales_panel: Panel
) -> None:
    manifest = Manifest.load(model_dir)
    rows = training_like_rows(sales_panel, manifest.horizon, 3000, seed=2)
    rows[:, manifest.features.names.index(SHIFTED)] += 1.0  # the last sale, one recent level higher
    send(serve, rows)
    _, scores = drift_of(serve)
    assert scores[SHIFTED] > 0.25, scores
    assert max(v for k, v in scores.items() if k != SHIFTED) < 0.1, scores


def test_forecast_rows_are_observed(serve: TestClient, model_dir: Path, sales_panel: Panel) -> None:
    manifest = Manifest.load(model_dir)
    series = [forecast_series(sales_panel, s, manifest.min_history) for s in range(sales_panel.n_series)]
    response = serve.post("/v1/forecast", json={"series": series})
    assert response.status_code == 200, response.text
    rows, scores = drift_of(serve)
    assert rows == sales_panel.n_series * manifest.horizon
    assert rows < MIN_ROWS and scores == {}  # too few for a score yet


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def drift_log() -> Iterator[list[logging.LogRecord]]:
    handler = Records()
    logger = logging.getLogger("retail_forecast.inference")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def not_reported(records: list[logging.LogRecord]) -> list[str]:
    return [
        getattr(r, "fields", {})["reason"] for r in records if r.getMessage() == "input drift not reported"
    ]


def test_a_model_trained_before_drift_references_serves_without_drift(
    model_dir: Path, tmp_path: Path, sales_panel: Panel, drift_log: list[logging.LogRecord]
) -> None:
    older = tmp_path / "older"
    shutil.copytree(model_dir, older)
    raw = json.loads((older / "manifest.json").read_text())
    del raw["drift_reference"]
    (older / "manifest.json").write_text(json.dumps(raw))
    with TestClient(create_app(older)) as client:
        wait_ready(client)
        send(client, training_like_rows(sales_panel, raw["horizon"], 2000, seed=3))
        assert drift_of(client) == (None, {})
        assert drift_of(client) == (None, {})
    (reason,) = not_reported(drift_log)  # said once, at load
    assert "no drift_reference" in reason


def test_drift_can_be_turned_off(model_dir: Path, drift_log: list[logging.LogRecord]) -> None:
    with TestClient(create_app(model_dir, drift=False)) as client:
        wait_ready(client)
        assert drift_of(client) == (None, {})
    assert not_reported(drift_log) == ["turned off (--no-drift)"]

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retail_forecast.core.data import DataReport, Panel, build_panel, validate_sales
from retail_forecast.core.schema import Freq
from retail_forecast.inference.app import create_app
from retail_forecast.training.pipeline import TrainConfig, train
from retail_forecast.training.synth import synthesize


@pytest.fixture(scope="session")
def sales_panel() -> Panel:
    frame = validate_sales(synthesize(stores=2, items=6, periods=240, freq=Freq.DAILY, seed=11))
    panel, _ = build_panel(frame, Freq.DAILY)
    return panel


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, sales_panel: Panel) -> Path:
    """A real model, trained once for the serving tests (a few seconds)."""
    out = tmp_path_factory.mktemp("model")
    config = TrainConfig(
        horizon=14, trials=1, max_rows=20_000, search_rows=10_000, name="demand", version="7"
    )
    train(sales_panel, DataReport(), out, config, progress=lambda _: None)
    return out


def wait_ready(test_client: TestClient) -> None:
    """Readiness turns true after the background load and self-check; poll it as a kubelet would."""
    for _ in range(400):
        if test_client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.025)
    raise AssertionError(test_client.get("/v2/health/ready").json())


@pytest.fixture
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(model_dir, max_batch_rows=2048)) as test_client:
        wait_ready(test_client)
        yield test_client

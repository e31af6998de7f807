from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retail_forecast.inference.app import create_app
from retail_forecast.inference.limits import Limits


def wait_ready(test_client: TestClient) -> None:
    """Readiness turns true after the background load and self-check; poll it as a kubelet would."""
    for _ in range(400):
        if test_client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.025)
    raise AssertionError(test_client.get("/v2/health/ready").json())


@pytest.fixture
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(model_dir, limits=Limits(max_batch_rows=2048))) as test_client:
        wait_ready(test_client)
        yield test_client

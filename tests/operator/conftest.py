"""Operator test fixtures: an in-process Kubernetes API emulator (tests/operator/kube.py), and a tiny real
model published to Azurite for the operator to verify. The real control plane is `control_plane`
(tests/conftest.py).

Async tests and fixtures run under pytest-asyncio (strict mode: mark tests with ``@pytest.mark.asyncio``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from retail_forecast.core.data import build_panel, validate_sales
from retail_forecast.core.schema import Freq
from retail_forecast.core.store import open_store
from retail_forecast.training.pipeline import TrainConfig, train
from retail_forecast.training.synth import synthesize
from tests.azurite import Azurite
from tests.operator.kube import ApiServer, serve


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[ApiServer]:
    """A fresh API server on 127.0.0.1 (free port) with the built-in kinds and the ForecastModel CRD."""
    async with serve() as api:
        yield api


@dataclass(frozen=True)
class Store:
    uri: str
    sha: dict[str, str]
    connection_string: str


@pytest.fixture(scope="session")
def store(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One tiny real model, published as versions "1" and "2" to an Azurite container (once per session)."""
    frame = validate_sales(synthesize(stores=2, items=6, periods=240, freq=Freq.DAILY, seed=11))
    panel, report = build_panel(frame, Freq.DAILY)
    out = tmp_path_factory.mktemp("operator-model")
    # Small on purpose (a couple of seconds): the operator reads the manifest, it never runs the model.
    config = TrainConfig(
        horizon=14,
        folds=2,
        trials=1,
        max_rows=5_000,
        search_rows=3_000,
        name="demand",
        version="1",
        fixed_params={"max_iter": 30},
    )
    train(panel, report, out, config, progress=lambda _: None)
    uri = f"azureblob://ops-{uuid.uuid4().hex[:20]}/models"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
        env.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
        published = open_store(uri)
        sha = {version: published.publish(out, "demand", version).sha256 for version in ("1", "2")}
    yield Store(uri, sha, azurite.connection_string)

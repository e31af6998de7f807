"""Shared fixtures: a real Azurite for everything that talks to Azure Blob Storage, a real model, and a
real Kubernetes control plane."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType

import pytest

from retail_forecast.core.data import DataReport, Panel, build_panel, validate_sales
from retail_forecast.core.schema import Freq
from retail_forecast.training.pipeline import TrainConfig, train
from retail_forecast.training.synth import synthesize
from tests.azurite import Azurite, find_azurite_blob
from tests.controlplane import AssetsMissing, ControlPlane, find_assets
from tests.outcomes import FAILED_PHASES


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One emulator per session; a missing Azurite fails (not skips) so CI can never pass silently."""
    try:
        binary = find_azurite_blob()
    except FileNotFoundError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(missing, pytrace=False)
    with Azurite(tmp_path_factory.mktemp("azurite"), binary=binary) as server:
        yield server


DATASETS_ENV = "FORECAST_DATASETS"


@pytest.fixture(scope="session")
def real_datasets() -> Path:
    """Real retail data that cannot live in the repository (licences, size): a folder holding
    `favorita/` and `m5-sample/`, named by FORECAST_DATASETS. `.ci/run` sets it; elsewhere these tests
    skip and say how to run them."""
    folder = os.environ.get(DATASETS_ENV)
    if not folder:
        pytest.skip(
            f"{DATASETS_ENV} is not set: point it at a folder with favorita/transactions_daily.csv and "
            "m5-sample/ (see docs/DATASETS.md) to run the tests on real retail data"
        )
    path = Path(folder)
    if not path.is_dir():
        pytest.fail(f"{DATASETS_ENV}={folder} is not a folder", pytrace=False)
    return path


@pytest.fixture
def azure_store_uri(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    """An `azureblob://` URI in a fresh (not yet created) container, credentials set in the env."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    return f"azureblob://t-{uuid.uuid4().hex[:24]}/models"


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


@pytest.fixture(scope="session")
def point_model_dir(tmp_path_factory: pytest.TempPathFactory, sales_panel: Panel) -> Path:
    """The same model without quantile outputs (`--quantiles none`), as every model before them was."""
    out = tmp_path_factory.mktemp("point-model")
    config = TrainConfig(
        horizon=14, trials=1, max_rows=20_000, search_rows=10_000, name="demand", version="6", quantiles=()
    )
    train(sales_panel, DataReport(), out, config, progress=lambda _: None)
    return out


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager, once per session (about 10 s to start).

    Skipped, with the reason, when KUBEBUILDER_ASSETS is unset (CI sets it, and fails on any skip).
    """
    try:
        assets = find_assets()
    except AssetsMissing as exc:
        pytest.skip(str(exc))
    with ControlPlane(tmp_path_factory.mktemp("control-plane"), assets) as plane:
        yield plane


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """With FORECAST_CI_NO_SKIP=1 (.ci/run sets it) a skipped test fails: CI must never pass silently.

    A failed phase is kept on the item, for fixtures that print what they kept (`outcomes.py`)."""
    report: pytest.TestReport = yield
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("FORECAST_CI_NO_SKIP") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and FORECAST_CI_NO_SKIP=1 forbids skips: {reason}"
    if report.failed:
        item.stash.setdefault(FAILED_PHASES, set()).add(report.when)
    return report


def _interrupted(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, `kill`) stops the run as Ctrl-C does: pytest then tears its fixtures down,
    so no control plane, Azurite or operator outlives it. Only SIGKILL still leaves them running."""
    signal.signal(signal.SIGTERM, _interrupted)

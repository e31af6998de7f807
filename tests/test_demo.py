"""`forecast demo` end to end, and the guarantee that its scoring service never outlives it.

What the demo prints is checked against the real files: the data it wrote, and the version it published,
fetched and scored here through the shared feature pipeline and onnxruntime, not through the service.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd
import pytest

from retail_forecast.cli import main
from retail_forecast.core import features as feat
from retail_forecast.core.data import build_panel, read_sales, validate_sales
from retail_forecast.core.manifest import MANIFEST_FILE, MODEL_FILE, Manifest
from retail_forecast.core.schema import DATE, ITEM, SALES, STORE, Freq
from retail_forecast.core.store import open_store
from retail_forecast.demo import READY_TIMEOUT_S, DemoError, forecast_request, serve_and_compare
from retail_forecast.training.synth import synthesize

ROW: Final = re.compile(
    r"^\s+(?P<store_id>store_\S+)\s+(?P<item_id>item_\S+)\s+(?P<date>\d{4}-\d\d-\d\d)"
    r"\s+(?P<forecast>[\d.]+)\s+(?P<actual>[\d.]+)\s+(?P<naive>[\d.]+)$",
    re.MULTILINE,
)
SHOWN: Final = 6  # weeks held back and forecast
WEEKS_PER_SEASON: Final = 52


def _pid(printed: str) -> int:
    match = re.search(r"^  pid (\d+), log ", printed, re.MULTILINE)
    assert match, printed
    return int(match.group(1))


def _gone(pid: int) -> bool:
    """True once the process no longer exists (exited and reaped: a zombie still counts as there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wape(forecast: npt.NDArray[np.float64], actual: npt.NDArray[np.float64]) -> str:
    return f"{np.abs(forecast - actual).sum() / actual.sum():.4f}"


@pytest.mark.slow
def test_demo_serves_the_published_version_and_prints_its_forecasts_next_to_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    # Point forecasts only: the demo prints no quantile (tests/test_cli.py trains and checks them).
    args = ["--out", str(out), "--stores", "2", "--items", "5", "--freq", "W", "--trials", "1"]
    args += ["--quantiles", "none"]
    assert main(["demo", *args, "--horizon", str(SHOWN)]) == 0
    printed = capsys.readouterr().out
    for number, title in enumerate(["synthesising", "training", "publishing", "serving", "asking"], 1):
        assert f"[{number}/5] {title}" in printed

    # The version served is the one published: fetched and verified here from the store.
    store = open_store(f"file://{out / 'store'}")
    (version,) = store.versions("demand")
    manifest = store.fetch("demand", version, tmp_path / "fetched")
    assert manifest.quantiles is None  # --quantiles none reached `forecast train`
    assert f"--model-uri file://{out / 'store'} --name demand --version {version}" in printed
    # Training never saw the forecast window.
    sales = read_sales(out / "sales.parquet")
    origin = sales[DATE].max() - pd.Timedelta(weeks=SHOWN)
    assert manifest.training_data.end == str(origin.date())

    rows = pd.DataFrame([m.groupdict() for m in ROW.finditer(printed)])
    assert rows[[STORE, ITEM]].drop_duplicates().shape[0] == 3
    assert len(rows) == 3 * SHOWN

    # Forecasts: the published model scoring the shared features of the whole data at the origin.
    panel, _ = build_panel(sales, Freq.WEEKLY)
    keys = list(zip(panel.store_ids.tolist(), panel.item_ids.tolist(), strict=True))
    series = np.array([keys.index((s, i)) for s, i in zip(rows[STORE], rows[ITEM], strict=True)])
    dates = pd.to_datetime(rows[DATE])
    horizon = ((dates - origin).dt.days // 7).to_numpy()
    at_origin = np.full(len(rows), panel.dates.searchsorted(origin))
    session = ort.InferenceSession(str(tmp_path / "fetched" / MODEL_FILE), providers=["CPUExecutionProvider"])
    x = feat.build_features(panel, series, at_origin, horizon)
    expected = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)
    assert rows["forecast"].tolist() == [f"{v:.2f}" for v in expected]

    # Actuals are the data's rows; seasonal naive is the same week a year earlier.
    by_key = sales.set_index([STORE, ITEM, DATE])[SALES]
    actual = np.array(
        [by_key[(s, i, d)] for s, i, d in zip(rows[STORE], rows[ITEM], dates, strict=True)], dtype=np.float64
    )
    assert rows["actual"].tolist() == [f"{v:.2f}" for v in actual]
    year_before = dates - pd.Timedelta(weeks=WEEKS_PER_SEASON)
    naive = np.array(
        [by_key[(s, i, d)] for s, i, d in zip(rows[STORE], rows[ITEM], year_before, strict=True)],
        dtype=np.float64,
    )
    assert rows["naive"].tolist() == [f"{v:.2f}" for v in naive]
    shown = printed.split("[5/5]")[1]
    assert f"| model | {_wape(expected, actual)} |" in shown
    assert f"| seasonal naive | {_wape(naive, actual)} |" in shown

    plot = out / "model" / "forecast.png"
    assert f"(plot: {plot})" in printed and plot.read_bytes()[:4] == b"\x89PNG"
    assert "service stopped on SIGTERM: exit code 0" in printed
    assert _gone(_pid(printed))


def test_the_request_sends_what_the_model_needs_for_complete_series_only() -> None:
    sales = validate_sales(synthesize(stores=2, items=6, periods=200, freq=Freq.DAILY, seed=5))
    origin = sales[DATE].max() - pd.Timedelta(days=7)
    busiest = sales[sales[DATE] <= origin].groupby([STORE, ITEM])[SALES].sum().idxmax()
    closed = (sales[STORE] == busiest[0]) & (sales[ITEM] == busiest[1]) & (sales[DATE] == origin)
    request, chosen = forecast_request(sales[~closed], origin, Freq.DAILY, history=56, horizon=7, count=3)
    assert busiest not in chosen and len(chosen) == 3
    for key, series in zip(chosen, request.series, strict=True):
        assert (series.store_id, series.item_id) == key
        assert len(series.history) == 56 and series.history[-1].date == origin.date()
        assert [p.date for p in series.future] == [
            (origin + pd.Timedelta(days=d)).date() for d in range(1, 8)
        ]
    assert request.horizon == 7


def test_a_horizon_beyond_the_models_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--freq", "W", "--horizon", "9"]) == 2
    assert "--horizon 9 is beyond the model's horizon 8" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def _published(model_dir: Path, tmp_path: Path, manifest: Manifest | None = None) -> str:
    """`model_dir` (or its model under `manifest`) published to a fresh local store as demand/7."""
    source = tmp_path / "source"
    source.mkdir()
    (source / MODEL_FILE).write_bytes((model_dir / MODEL_FILE).read_bytes())
    (source / MANIFEST_FILE).write_text((manifest or Manifest.load(model_dir)).to_json())
    uri = f"file://{tmp_path / 'store'}"
    open_store(uri).publish(source, "demand", "7")
    return uri


def _sales() -> pd.DataFrame:
    """The data the `model_dir` fixture was trained on."""
    return validate_sales(synthesize(stores=2, items=6, periods=240, freq=Freq.DAILY, seed=11))


def _serve(
    store: str, manifest: Manifest, tmp_path: Path, *, port: int = 0, ready_timeout: float = READY_TIMEOUT_S
) -> None:
    sales = _sales()
    origin = sales[DATE].max() - pd.Timedelta(days=7)
    serve_and_compare(
        store,
        manifest,
        sales,
        origin,
        out=tmp_path / "demo",
        series=2,
        horizon=7,
        port=port,
        ready_timeout=ready_timeout,
    )


def _never_ready(model_dir: Path, tmp_path: Path) -> tuple[str, Manifest]:
    """A store version whose manifest's golden outputs the model cannot reproduce: never ready."""
    manifest = Manifest.load(model_dir)
    golden = manifest.golden.model_copy(update={"outputs": [v + 1.0 for v in manifest.golden.outputs]})
    broken = manifest.model_copy(update={"golden": golden, "version": "7"})
    return _published(model_dir, tmp_path, broken), broken


def test_a_version_missing_from_the_store_fails_with_the_services_log(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _published(model_dir, tmp_path)
    missing = Manifest.load(model_dir).model_copy(update={"version": "8"})
    with pytest.raises(DemoError) as error:
        _serve(store, missing, tmp_path)
    assert "forecast serve exited with code 4 before it was ready" in str(error.value)
    assert "demand/8 does not exist" in str(error.value)
    assert _gone(_pid(capsys.readouterr().out))


def test_a_port_already_taken_fails_with_the_services_log(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _published(model_dir, tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(DemoError) as error:
            _serve(store, Manifest.load(model_dir), tmp_path, port=taken.getsockname()[1])
    assert "exited with code 3 before it was ready" in str(error.value)
    assert "address already in use" in str(error.value)
    assert _gone(_pid(capsys.readouterr().out))


def test_a_service_that_never_gets_ready_is_stopped_at_the_timeout(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, manifest = _never_ready(model_dir, tmp_path)
    with pytest.raises(DemoError) as error:
        _serve(store, manifest, tmp_path, ready_timeout=3)
    assert "forecast serve was not ready after 3 s" in str(error.value)
    assert _gone(_pid(capsys.readouterr().out))


def test_ctrl_c_while_waiting_stops_the_service(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, manifest = _never_ready(model_dir, tmp_path)
    log = tmp_path / "demo" / "serve.log"
    returned = threading.Event()

    def press_ctrl_c_once_the_model_failed() -> None:
        while not returned.wait(0.05):
            if log.exists() and "model self-check failed" in log.read_text():
                os.kill(os.getpid(), signal.SIGINT)
                return

    presser = threading.Thread(target=press_ctrl_c_once_the_model_failed, daemon=True)
    # A runner started in the background (`cmd &` without job control, nohup) ignores SIGINT, and Python
    # keeps an ignored SIGINT ignored: Ctrl-C is what this test is about, so it installs Python's own.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _serve(store, manifest, tmp_path)
    finally:
        returned.set()
        presser.join()
        signal.signal(signal.SIGINT, previous)
    assert _gone(_pid(capsys.readouterr().out))

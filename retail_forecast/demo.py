"""`forecast demo`: the whole system on one machine, from synthetic sales to forecasts served over HTTP.

It runs the commands a user runs (`forecast synth`, `train`, `publish`, then `forecast serve` as a
process fetching the published version from the store, as a pod does) and talks to the service only
over HTTP. The last periods of the synthetic data are held back from training, so the forecasts it
prints are compared with actuals the model never saw.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from retail_forecast.core import features as feat
from retail_forecast.core.data import build_panel, read_sales
from retail_forecast.core.manifest import Manifest
from retail_forecast.core.schema import DATE, EVENT, ITEM, PRICE, PROMO, SALES, STORE, Freq
from retail_forecast.inference.forecast import (
    ForecastRequest,
    ForecastResponse,
    FuturePoint,
    HistoryPoint,
    SeriesRequest,
)
from retail_forecast.training.metrics import ForecastBlock, Scores, naive_scales, score
from retail_forecast.training.report import PLOT_FILE, REPORT_FILE, metrics_table

STEPS: Final = 5
LOOPBACK: Final = "127.0.0.1"
READY_TIMEOUT_S: Final = 120.0
STOP_TIMEOUT_S: Final = 30.0  # the service drains in-flight requests for up to 20 s
HTTP_TIMEOUT_S: Final = 60.0
PROBE_TIMEOUT_S: Final = 2.0
LOG_TAIL_LINES: Final = 25
# Never through a proxy: the service listens on loopback only.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
FloatArray = npt.NDArray[np.float64]


class DemoError(RuntimeError):
    """A demo step failed; the message says which, with the service's log tail where it matters."""


def _step(number: int, title: str) -> None:
    print(f"[{number}/{STEPS}] {title}", flush=True)


def run(
    *,
    out: Path,
    stores: int,
    items: int,
    freq: Freq,
    trials: int,
    seed: int,
    series: int,
    horizon: int,
    port: int,
    ready_timeout: float | None,
    quantiles: tuple[float, ...] | None = None,
) -> int:
    """All five steps, each the command a user would run; the exit code of the first that fails, else 0.

    `quantiles`: the levels the model also forecasts (None: `forecast train`'s default; () for none).
    """
    from retail_forecast.cli import main as forecast  # noqa: PLC0415 - the CLI imports this module

    if horizon > freq.default_horizon:  # checked before training, which takes minutes
        raise ValueError(f"--horizon {horizon} is beyond the model's horizon {freq.default_horizon}")
    out = out.resolve()
    sales_path, train_path, model_dir = out / "sales.parquet", out / "train.parquet", out / "model"
    store_uri = f"file://{out / 'store'}"

    _step(1, "synthesising data")
    size = ["--stores", str(stores), "--items", str(items), "--freq", freq.value]
    code = forecast(["synth", "--out", str(sales_path), *size, "--seed", str(seed)])
    if code:
        return code
    sales = read_sales(sales_path)
    origin = pd.Timestamp(sales[DATE].max()) - pd.Timedelta(days=horizon * freq.days)
    sales[sales[DATE] <= origin].to_parquet(train_path, index=False)
    unit = "days" if freq is Freq.DAILY else "weeks"
    print(f"held back from training: the last {horizon} {unit}, after {origin.date()}", flush=True)

    _step(2, f"training on {train_path.name} (search, holdout, promotion gate, ONNX export, report)")
    # Each run trains afresh into model/ and publishes a new version next to the older ones.
    shutil.rmtree(model_dir, ignore_errors=True)
    train = ["train", "--data", str(train_path), "--out", str(model_dir)]
    train += ["--trials", str(trials), "--seed", str(seed)]
    if quantiles is not None:
        train += ["--quantiles", ",".join(map(str, quantiles)) or "none"]
    code = forecast(train)
    if code:
        return code
    manifest = Manifest.load(model_dir)

    _step(3, "publishing to the local model store")
    code = forecast(["publish", str(model_dir), "--store", store_uri, "--name", manifest.name])
    if code:
        return code

    serve_and_compare(
        store_uri,
        manifest,
        sales,
        origin,
        out=out,
        series=series,
        horizon=horizon,
        port=port,
        ready_timeout=READY_TIMEOUT_S if ready_timeout is None else ready_timeout,
    )
    print(f"training report: {model_dir / REPORT_FILE} (plot: {model_dir / PLOT_FILE})")
    return 0


def serve_and_compare(
    store_uri: str,
    manifest: Manifest,
    sales: pd.DataFrame,
    origin: pd.Timestamp,
    *,
    out: Path,
    series: int,
    horizon: int,
    port: int = 0,
    ready_timeout: float = READY_TIMEOUT_S,
) -> None:
    """Steps 4 and 5: serve the published version, ask it for forecasts from `origin`, compare, stop.

    The service is stopped however this ends (an error, Ctrl-C); raises `DemoError` if it fails to
    start, to answer, or to stop with exit code 0.
    """
    freq = Freq(manifest.freq)
    _step(4, f"serving {manifest.name} version {manifest.version} from the store (forecast serve)")
    source = ["--model-uri", store_uri, "--name", manifest.name, "--version", manifest.version]
    source += ["--fetch-dir", str(out / "fetched")]
    with ScoringService(source, out / "serve.log", port=port) as service:
        print(f"  {service.describe()}", flush=True)
        started = time.monotonic()
        service.wait_ready(ready_timeout)
        print(
            f"  ready after {time.monotonic() - started:.1f} s: fetched, sha256 verified, "
            "golden sample reproduced",
            flush=True,
        )

        _step(5, f"asking /v1/forecast for {series} series from {origin.date()} and comparing with actuals")
        request, chosen = forecast_request(sales, origin, freq, manifest.min_history, horizon, series)
        comparison = compare(sales, freq, origin, chosen, service.forecast(request))
        print("\n".join(comparison.lines(manifest)), flush=True)
        code = service.stop()
    print(f"service stopped on SIGTERM: exit code {code}")
    if code:
        raise DemoError(f"forecast serve exited with code {code} on SIGTERM\n{service.log_tail()}")


def forecast_request(
    sales: pd.DataFrame,
    origin: pd.Timestamp,
    freq: Freq,
    history: int,
    horizon: int,
    count: int,
) -> tuple[ForecastRequest, list[tuple[str, str]]]:
    """A /v1/forecast request for `count` series, straight from the data's rows.

    Each series sends its last `history` periods up to `origin` (what the model needs, no more) and the
    price, promo and event of the `horizon` periods after it, which a retailer plans ahead. Only series
    with a row in every one of those periods qualify, so every forecast has an actual to compare with;
    they are taken evenly from the busiest to the quietest, as forecasts look different across volumes.
    """
    step = pd.Timedelta(days=freq.days)
    first, last = origin - (history - 1) * step, origin + horizon * step
    window = sales[(sales[DATE] >= first) & (sales[DATE] <= last)]
    rows = window.groupby([STORE, ITEM], sort=True)
    sizes = rows.size()
    complete = sizes[sizes == history + horizon].index
    if complete.empty:
        raise DemoError(f"no series has a row for every period from {first.date()} to {last.date()}")
    volume = window[window[DATE] <= origin].groupby([STORE, ITEM], sort=True)[SALES].sum()
    ranked = volume.reindex(complete).sort_values(ascending=False, kind="stable").index.tolist()
    picks = np.unique(np.linspace(0, len(ranked) - 1, min(count, len(ranked))).round().astype(int))
    chosen: list[tuple[str, str]] = [(str(ranked[i][0]), str(ranked[i][1])) for i in picks]

    def plan(row: pd.Series) -> FuturePoint:
        return FuturePoint(
            date=row[DATE].date(),
            price=None if pd.isna(row[PRICE]) else float(row[PRICE]),
            promo=int(row[PROMO]),
            event=row[EVENT] or None,
        )

    requests = []
    for key in chosen:
        own = rows.get_group(key)
        past, future = own[own[DATE] <= origin], own[own[DATE] > origin]
        requests.append(
            SeriesRequest(
                store_id=key[0],
                item_id=key[1],
                history=[
                    HistoryPoint(sales=float(row[SALES]), **asdict(plan(row))) for _, row in past.iterrows()
                ],
                future=[plan(row) for _, row in future.iterrows()],
            )
        )
    return ForecastRequest(series=requests, horizon=horizon), chosen


@dataclass(frozen=True)
class Comparison:
    """The service's forecasts next to the actuals and seasonal naive, for the same points."""

    keys: list[tuple[str, str]]
    dates: list[pd.Timestamp]
    forecast: FloatArray
    actual: FloatArray
    naive: FloatArray
    model_scores: Scores
    naive_scores: Scores

    def lines(self, manifest: Manifest) -> list[str]:
        table = [f"  {'store':<10} {'item':<10} {'date':<10} {'forecast':>9} {'actual':>9} {'naive':>9}"]
        table += [
            f"  {store:<10} {item:<10} {date.date()!s:<10} {f:>9.2f} {a:>9.2f} {n:>9.2f}"
            for (store, item), date, f, a, n in zip(
                self.keys, self.dates, self.forecast, self.actual, self.naive, strict=True
            )
        ]
        holdout, baseline = (_wape(manifest.metrics[name].wape) for name in ("model", "seasonal_naive"))
        return [
            *table,
            "",
            f"these {len(self.forecast)} points (model = the service's forecasts):",
            *metrics_table({"model": self.model_scores, "seasonal naive": self.naive_scores}),
            f"the training holdout over all series: model WAPE {holdout}, seasonal naive {baseline}",
        ]


def _wape(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def compare(
    sales: pd.DataFrame,
    freq: Freq,
    origin: pd.Timestamp,
    chosen: list[tuple[str, str]],
    response: ForecastResponse,
) -> Comparison:
    """Line the response up with the data: actuals from the data's rows, baselines from its panel."""
    panel, _ = build_panel(sales, freq)
    row_of = {
        key: k for k, key in enumerate(zip(panel.store_ids.tolist(), panel.item_ids.tolist(), strict=True))
    }
    at_origin = panel.dates.searchsorted(origin)
    actuals = sales.set_index([STORE, ITEM, DATE])[SALES]
    answered = {(f.store_id, f.item_id): f.points for f in response.forecasts}
    points = [(key, pd.Timestamp(point.date), point.yhat) for key in chosen for point in answered[key]]
    keys = [key for key, _, _ in points]
    dates = [date for _, date, _ in points]
    series = np.array([row_of[key] for key in keys], dtype=np.int64)
    horizon = np.array([(date - origin).days // freq.days for date in dates], dtype=np.int64)
    actual = np.array(
        [actuals[(*key, date)] for key, date in zip(keys, dates, strict=True)], dtype=np.float64
    )
    block = ForecastBlock(
        series, horizon, actual, np.array([yhat for _, _, yhat in points], dtype=np.float64)
    )
    origins = np.full(len(series), at_origin, dtype=np.int64)
    naive = ForecastBlock(series, horizon, actual, feat.seasonal_naive(panel, series, origins, horizon))
    mase_scale, rmsse_scale = naive_scales(panel.sales[:, : at_origin + 1], freq.season)
    return Comparison(
        keys=keys,
        dates=dates,
        forecast=block.predicted,
        actual=actual,
        naive=naive.predicted,
        model_scores=score(block, mase_scale, rmsse_scale),
        naive_scores=score(naive, mase_scale, rmsse_scale),
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ScoringService:
    """`forecast serve` as a child process on a loopback port; stopped on leaving, whatever happened.

    The shutdown delay (for Kubernetes endpoints to catch up) is 0: nothing routes to this process.
    """

    process: subprocess.Popen[bytes]

    def __init__(self, args: Sequence[str], log: Path, *, port: int = 0) -> None:
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log = log
        self.args = [*args, "--host", LOOPBACK, "--port", str(self.port), "--shutdown-delay", "0"]

    def describe(self) -> str:
        return f"forecast serve {' '.join(self.args)}\n  pid {self.process.pid}, log {self.log}"

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return "\n".join([f"last {len(lines)} lines of {self.log}:", *(f"  {line}" for line in lines)])

    def wait_ready(self, timeout: float) -> None:
        """Poll /v2/health/ready as a kubelet would, until 200, the process exits, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise DemoError(
                    f"forecast serve exited with code {code} before it was ready\n{self.log_tail()}"
                )
            if self._ready():
                return
            if time.monotonic() >= deadline:
                raise DemoError(f"forecast serve was not ready after {timeout:g} s\n{self.log_tail()}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with _HTTP.open(f"{self.url}/v2/health/ready", timeout=PROBE_TIMEOUT_S) as answer:
                return int(answer.status) == 200
        except OSError:  # not listening yet, 503 until the model is ready, or no answer in time
            return False

    def forecast(self, request: ForecastRequest) -> ForecastResponse:
        body = request.model_dump_json(exclude_none=True).encode()
        post = urllib.request.Request(
            f"{self.url}/v1/forecast", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with _HTTP.open(post, timeout=HTTP_TIMEOUT_S) as answer:
                return ForecastResponse.model_validate_json(answer.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):  # the service's {"error": ...}
                detail = json.loads(detail)["error"]
            raise DemoError(f"/v1/forecast answered {exc.code}: {detail}\n{self.log_tail()}") from None

    def stop(self) -> int:
        """SIGTERM, then the exit code; killed if it has not stopped within STOP_TIMEOUT_S (or on Ctrl-C)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DemoError(
                f"forecast serve did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM; killed\n"
                + self.log_tail()
            ) from None
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retail_forecast.cli", "serve", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.returncode is None:
            self.stop()

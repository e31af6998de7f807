"""Batch forecasting cost: series/s and peak RSS of `forecast predict` at 300, 3,000 and 30,000 series.

Every size runs the real command in a fresh process (`python -m retail_forecast.cli predict`, one
onnxruntime thread, OMP_NUM_THREADS=1) on synthetic daily sales (`training/synth.py`, 120 days, the
model's 28-day horizon), writing one Parquet run. Its wall time and the peak RSS the kernel reports for
that process (wait4) are printed side by side with the ratios between consecutive sizes: how the cost
grows with 10x the work. Nothing here asserts timings: it prints them.

    python benchmarks/predict.py [--model-dir DIR] [--sizes 300 3000 30000] [--chunk-series N]

Without --model-dir it trains the serving benchmark's model (`benchmarks/serving.py`: fixed parameters,
300 trees, 43 features, horizon 28) in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow.parquet as pq

from benchmarks.serving import build_model
from retail_forecast.core.schema import Freq
from retail_forecast.training.synth import synthesize_to

PERIODS: Final = 120
STORES: Final = 30


@dataclass(frozen=True)
class Run:
    series: int
    rows: int
    seconds: float
    peak_rss_mb: float

    @property
    def series_s(self) -> float:
        return self.series / self.seconds


def measure(model_dir: Path, data: Path, out: Path, chunk_series: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `forecast predict` process."""
    command = [sys.executable, "-m", "retail_forecast.cli", "predict", "--data", str(data)]
    command += ["--model-dir", str(model_dir), "--out", str(out), "--chunk-series", str(chunk_series)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    process = subprocess.Popen([*command, "--no-progress"], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"forecast predict failed with exit code {process.returncode}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="reuse a trained model folder instead of training one")
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 3_000, 30_000], help="series counts")
    parser.add_argument("--chunk-series", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        work = Path(tmp)
        model_dir: Path = args.model_dir or build_model(work)
        runs = []
        for size in args.sizes:
            stores = min(STORES, size)
            data = work / f"sales-{size}.parquet"
            synthesize_to(data, stores=stores, items=size // stores, periods=PERIODS, freq=Freq.DAILY, seed=1)
            out = work / f"run-{size}.parquet"
            seconds, rss = measure(model_dir, data, out, args.chunk_series)
            meta = pq.read_metadata(out)
            series = len(pq.read_table(out, columns=["store_id", "item_id"]).to_pandas().drop_duplicates())
            runs.append(Run(series, meta.num_rows, seconds, rss))
            print(f"{size:>7} series: {seconds:7.1f} s, peak RSS {rss:7.0f} MB", flush=True)
            data.unlink()
            out.unlink()
    print(f"\nforecast predict, {PERIODS} days of daily history, chunks of {args.chunk_series} series, "
          f"OMP_NUM_THREADS=1, {os.cpu_count()} CPUs")  # fmt: skip
    header = ("series", 8), ("rows", 10), ("wall s", 8), ("series/s", 9), ("peak RSS MB", 12), ("x time", 7)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'x RSS':>6}")
    previous: Run | None = None
    for run in runs:
        ratios = (
            f"{run.seconds / previous.seconds:7.2f} {run.peak_rss_mb / previous.peak_rss_mb:6.2f}"
            if previous
            else f"{'':>7} {'':>6}"
        )
        print(
            f"{run.series:>8,} {run.rows:>10,} {run.seconds:>8.1f} {run.series_s:>9,.0f} "
            f"{run.peak_rss_mb:>12,.0f} {ratios}"
        )
        previous = run
    return 0


if __name__ == "__main__":
    sys.exit(main())

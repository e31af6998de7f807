"""benchmarks/predict.py runs end to end at small sizes: a smoke test, no timing asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_predict_benchmark_measures_every_size(model_dir: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.predict", "--model-dir", str(model_dir)]
    command += ["--sizes", "30", "60", "--chunk-series", "16"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^\s+(\d+)\s+([\d,]+)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+)", result.stdout, re.MULTILINE)
    assert len(rows) == 2, result.stdout
    for series, forecasts, _, _, rss in rows:
        assert int(forecasts.replace(",", "")) == int(series) * 14  # every forecast series, 14 days
        assert int(rss.replace(",", "")) > 50  # the process's own peak, not the parent's

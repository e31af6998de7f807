"""benchmarks/training.py runs end to end on a tiny size: a smoke test of the script behind the README's
training-at-scale table; no timing is asserted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_training_benchmark_reports_time_memory_and_accuracy(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "benchmarks" / "training.py"), "--sizes", "30", "--old-cap"]
    # No quantile heads: nothing here reads them (tests/test_cli.py trains and checks them).
    command += ["--trials", "1", "--quantiles", "none", "--keep", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        match["run"]: match
        for match in re.finditer(
            r"^(?P<run>30 (?:rule|300k cap))\s+30\s+(?P<possible>[\d,]+)\s+(?P<train>[\d,]+)\s+[\d,]+\s+"
            r"(?P<wall>\d+)\s+(?P<cpu>\d+)\s+(?P<rss>[\d.]+)\s+(?P<wape>[\d.]+)\s+(?P<naive>[\d.]+)\s+",
            result.stdout,
            re.MULTILINE,
        )
    }
    assert set(rows) == {"30 rule", "30 300k cap"}, result.stdout
    rule = rows["30 rule"]
    # 30 series have fewer observed sales than either limit: one training row per observed sale.
    metrics = (tmp_path / "model-30-rule" / "metrics.json").read_text()
    assert f'"drawn": {int(rule["train"].replace(",", ""))}' in metrics
    assert json.loads(metrics)["quantiles"] is None  # --quantiles none reached `forecast train`
    assert int(rule["train"].replace(",", "")) < int(rule["possible"].replace(",", ""))
    # A Python process that imported scikit-learn and trained: more than 50 MiB, far less than the host.
    assert 0.05 < float(rule["rss"]) < 8.0
    assert 0 < float(rule["wape"]) < float(rule["naive"])

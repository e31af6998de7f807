"""benchmarks/operator.py runs end to end at a tiny size: the figures it prints are all there, and the
operator it measures writes nothing in steady state (a behaviour, counted from the audit log; no timing
is asserted).

Needs KUBEBUILDER_ASSETS and Azurite, as the operator tests do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.controlplane import AssetsMissing, find_assets

REPO = Path(__file__).resolve().parents[2]
COUNTS = (1, 3)

pytestmark = pytest.mark.timeout(900)


def test_the_operator_benchmark_reports_every_figure_and_no_steady_state_write(tmp_path: Path) -> None:
    try:
        find_assets()
    except AssetsMissing as exc:
        pytest.skip(str(exc))
    figures = tmp_path / "figures.json"
    command = [sys.executable, "-m", "benchmarks.operator", "--counts", *map(str, COUNTS)]
    command += ["--window", "15", "--settle", "3", "--timeout", "300", "--json", str(figures)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=840, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    report = json.loads(figures.read_text())
    runs = {run["count"]: run for run in report["runs"]}
    assert sorted(runs) == list(COUNTS), result.stdout
    for count, run in runs.items():
        for times in (run["ready_seconds"], run["available_seconds"]):
            assert set(times) == {"p50", "p95", "max"}
            assert 0 < times["p50"] <= times["p95"] <= times["max"] <= run["seconds_to_all_ready"]
        unexpected = {k: v for k, v in run["steady_writes"].items() if "kopfpeerings" not in k}
        assert unexpected == {}, f"{count} ForecastModels: the operator wrote in steady state"
        assert run["steady_writes_per_min"] == 0
        assert run["ramp_writes_per_model"] > 0  # it did create the children (the audit log is read)
        assert run["quiet_seconds_after_ready"] >= 0
        assert run["watches_open"] >= 2  # ForecastModels and Deployments, at least
        assert run["denied"] == 0
        assert run["cpu_seconds"]["ramp"] > 0
        assert run["rss_mib"]["steady"] > 0
    assert set(report["ratios"]) >= {"seconds until all Ready", "RSS growth over idle"}
    assert f"== {COUNTS[-1]} / {COUNTS[0]} ForecastModels" in result.stdout

"""benchmarks/serving.py runs end to end with either load generator: a smoke test, no timing asserted.

It keeps the script that backs the README's throughput claims runnable (it once passed wrk a duration
wrk cannot read). Needs Debian's hey and wrk, which `make test` installs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WAYS = (
    "raw onnxruntime",
    "fastapi+pydantic",
    "service",
    "service+access log",
    "service, no coalescing",
    "service, no drift",
)


@pytest.mark.parametrize("tool", ["hey", "wrk"])
def test_the_serving_benchmark_measures_every_way_with(tool: str, model_dir: Path) -> None:
    assert shutil.which(tool), f"{tool} is not installed (make test installs it with apt-get)"
    command = [sys.executable, str(REPO / "benchmarks" / "serving.py"), "--model-dir", str(model_dir)]
    command += ["--tool", tool, "--seconds", "1", "--rounds", "1", "--warmup", "20"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    table = {
        (match["way"].strip(), int(match["batch"])): float(match["req"].replace(",", ""))
        for match in re.finditer(
            r"^(?P<way>[a-z+, ]+?)\s+(?P<batch>32|1024)\s+(?P<req>[\d,]+)\s", result.stdout, re.MULTILINE
        )
    }
    assert set(table) == {(way, batch) for way in WAYS for batch in (32, 1024)}, result.stdout
    assert all(req_s > 0 for req_s in table.values())
    assert "service / baseline req/s at batch 32:" in result.stdout
    assert "service / raw onnxruntime rows/s at 1024:" in result.stdout
    assert "drift monitoring's cost in req/s:" in result.stdout

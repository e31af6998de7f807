"""Azure ML parallel-job entry script (partition-job.yml): one model per partition of the sales table.

Azure ML imports this file by path from the uploaded repository (`code: ../..`), calls `init()` once per
worker process and `run(mini_batch)` once per partition. The training itself is
`retail_forecast.training.partition`; on a node where the package is not installed yet, `init()` first
installs it from the upload, as the command jobs' `pip install --no-deps .` step does (the environment's
conda file already holds every dependency), once per node under a file lock.
"""

from __future__ import annotations

import fcntl
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_LOCK = Path("/tmp/retail-forecast-install.lock")  # node-local, shared by its workers
PARTITION_MODULE = "retail_forecast.training.partition"

_state: dict[str, Any] = {}


def _partition_module() -> ModuleType:
    try:
        return importlib.import_module(PARTITION_MODULE)
    except ImportError:
        pass
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            str(REPO_ROOT),
        ]
        subprocess.run(command, check=True)
    # The upload's retail_forecast/ folder (on sys.path when the working directory is the upload) would
    # shadow the installed package, which alone maps training/ into it.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]
    for name in [m for m in sys.modules if m == "retail_forecast" or m.startswith("retail_forecast.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return importlib.import_module(PARTITION_MODULE)


def init() -> None:
    """Parse the job's program arguments (Azure ML passes them in sys.argv)."""
    partition = _partition_module()
    _state["partition"] = partition
    _state["settings"] = partition.parse_settings(sys.argv[1:])


def run(mini_batch: Any) -> Any:
    """Train the mini-batch's partition (a pandas DataFrame); one summary row for `append_row_to`."""
    import pandas as pd  # noqa: PLC0415 - a dependency of the package init() made importable

    row = _state["partition"].train_partition(mini_batch, _state["settings"])
    return pd.DataFrame([row])

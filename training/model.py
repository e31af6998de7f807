"""The estimator and the hyper-parameter space it is searched over."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

Params = dict[str, float | int | str | None]

# A strong, cheap starting point: the first trial of every search, so a search never does worse than it.
DEFAULT_PARAMS: Final[Params] = {
    "loss": "poisson",
    "learning_rate": 0.08,
    "max_leaf_nodes": 63,
    "min_samples_leaf": 50,
    "l2_regularization": 1.0,
    "max_features": 0.8,
    "max_iter": 400,
}

LOSSES: Final = ("poisson", "squared_error")
MAX_LEAF_NODES: Final = (15, 31, 63, 127)
MIN_SAMPLES_LEAF: Final = (20, 50, 100, 200)
MAX_FEATURES: Final = (0.5, 0.8, 1.0)


def sample_params(rng: np.random.Generator) -> Params:
    """One random draw from the search space (log-uniform for rates and penalties)."""
    return {
        "loss": str(rng.choice(LOSSES)),
        "learning_rate": float(np.exp(rng.uniform(np.log(0.03), np.log(0.2)))),
        "max_leaf_nodes": int(rng.choice(MAX_LEAF_NODES)),
        "min_samples_leaf": int(rng.choice(MIN_SAMPLES_LEAF)),
        "l2_regularization": float(np.exp(rng.uniform(np.log(1e-3), np.log(10.0)))),
        "max_features": float(rng.choice(MAX_FEATURES)),
        "max_iter": 400,
    }


def search_plan(trials: int, seed: int, fixed: Params | None = None) -> list[Params]:
    """The trials to run: defaults first, then random draws; `fixed` values override every trial."""
    rng = np.random.default_rng(seed)
    plan = [dict(DEFAULT_PARAMS)] + [sample_params(rng) for _ in range(max(trials, 1) - 1)]
    if fixed:
        plan = [{**params, **fixed} for params in plan]
        unique = {tuple(sorted(p.items(), key=lambda kv: kv[0])): p for p in plan}
        plan = list(unique.values())
    return plan


def make_estimator(params: Params, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: PLC0415 - training-only dependency

    return HistGradientBoostingRegressor(
        **params,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        random_state=seed,
    )


CGROUP_CPU_MAX: Final = Path("/sys/fs/cgroup/cpu.max")


def cpu_quota(cpu_max: str) -> float | None:
    """CPUs a cgroup v2 `cpu.max` line ("<quota> <period>" or "max <period>") allows; None: no quota."""
    quota, _, period = cpu_max.strip().partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def training_threads(
    affinity: int | None = None, cpu_max: Path = CGROUP_CPU_MAX, environ: dict[str, str] | None = None
) -> int:
    """Threads a fit should use: the CPUs this process may run on, lowered by a cgroup quota and by
    OMP_NUM_THREADS when set.

    OpenMP otherwise sizes itself from the machine's cores, and on a busy or throttled host its threads
    spin waiting for each other (HistGradientBoosting an order of magnitude slower).
    """
    cpus = affinity if affinity is not None else len(os.sched_getaffinity(0))
    try:
        quota = cpu_quota(cpu_max.read_text())
    except (OSError, ValueError):
        quota = None
    if quota is not None:
        cpus = min(cpus, max(math.floor(quota), 1))
    requested = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    if requested.isdigit() and int(requested) > 0:
        cpus = min(cpus, int(requested))
    return max(cpus, 1)


def fit(params: Params, features: npt.NDArray[np.float32], target: npt.NDArray[np.float64], seed: int) -> Any:
    estimator = make_estimator(params, seed)
    estimator.fit(features, target)
    return estimator

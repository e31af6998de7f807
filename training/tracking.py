"""Experiment tracking through MLflow, which Azure ML jobs and sweeps read their metrics from.

Active only when MLFLOW_TRACKING_URI is set (Azure ML sets it for every job); a local run logs nothing
and needs no MLflow install.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from retail_forecast.training.pipeline import TrainResult


class TrackingError(RuntimeError):
    """Tracking was asked for (MLFLOW_TRACKING_URI is set) but MLflow is not installed."""


def log_result(result: TrainResult) -> bool:
    """Log parameters and metrics; `wape` is the search objective (mean WAPE over the search folds).

    `wape` is logged once per search fold as the running mean (step = fold), so a sweep's early
    termination policy sees intermediate values; its last value is the trial's result.
    """
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return False
    try:
        import mlflow  # noqa: PLC0415 - optional, present in the Azure ML environment
    except ImportError:
        raise TrackingError("MLFLOW_TRACKING_URI is set but mlflow is not installed") from None
    chosen = result.trials[result.search.winner]
    with mlflow.start_run(nested=mlflow.active_run() is not None):
        mlflow.log_params({k: v for k, v in result.params.items() if v is not None})
        fold_wapes = [w for w in chosen["fold_wape"] if w is not None]
        for step, _ in enumerate(fold_wapes, start=1):
            mlflow.log_metric("wape", float(np.mean(fold_wapes[:step])), step=step)
        holdout = result.holdout
        for prefix, scores in (
            ("holdout", holdout.model),
            ("seasonal_naive", holdout.seasonal_naive),
            ("moving_average", holdout.moving_average),
        ):
            for name, value in scores.as_dict().items():
                if value is not None:
                    mlflow.log_metric(f"{prefix}_{name}", value)
        mlflow.log_metric("gate_passed", float(result.gate_passed))
    return True

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from retail_forecast.cli import main
from retail_forecast.core.schema import Freq
from retail_forecast.training.synth import synthesize_to
from retail_forecast.training.tracking import log_result


@pytest.mark.slow
def test_train_logs_the_search_objective_per_fold_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an Azure ML sweep reads: `wape` per search fold (running mean), then holdout scores."""
    tracking_uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    data = tmp_path / "sales.parquet"
    synthesize_to(data, stores=2, items=4, periods=200, freq=Freq.DAILY, seed=5)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "model"), "--horizon", "7", "--folds", "3"]
    fast = ["--trials", "1", "--max-rows", "5000", "--quantiles", "none"]  # tracking logs no quantile figure
    assert main([*args, *fast, "--loss", "poisson"]) == 0

    client = MlflowClient(tracking_uri)
    (experiment,) = client.search_experiments()
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "wape")
    assert [m.step for m in history] == [1, 2]
    assert run.data.params["loss"] == "poisson"
    metrics = run.data.metrics
    assert {"holdout_wape", "seasonal_naive_wape", "moving_average_wape", "gate_passed"} <= set(metrics)
    assert metrics["holdout_wape"] < metrics["seasonal_naive_wape"]


def test_nothing_is_logged_without_a_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert log_result(None) is False  # type: ignore[arg-type]  # returns before touching the result

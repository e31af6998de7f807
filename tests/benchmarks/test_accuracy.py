"""benchmarks/accuracy.py in its quick mode on the real datasets: every dataset is measured at three
rolling origins against every baseline, on the same rows; no timing is asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATASETS = ("favorita", "m5-10-series", "m5-70-series")
STATISTICAL = ("ETS", "Theta")
PIPELINE = "LightGBM"  # forecast train's learner, the only one quick mode runs
MEDIAN_HEAD = "LightGBM q0.5 (median head)"  # the same model's q0.5 output, as a point forecast
METHODS = {"seasonal naive", "moving average", *STATISTICAL, PIPELINE, MEDIAN_HEAD}


def test_the_accuracy_benchmark_scores_every_real_dataset_against_every_baseline(
    real_datasets: Path, tmp_path: Path
) -> None:
    figures = tmp_path / "accuracy.json"
    # One search fold: quick mode runs a single trial, which more search folds would only score again.
    command = [sys.executable, "-m", "benchmarks.accuracy", "--quick", "--folds", "2", "--json", str(figures)]
    env = {**os.environ, "FORECAST_DATASETS": str(real_datasets), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr

    report = json.loads(figures.read_text())
    assert report["skipped"] == {}
    assert set(report["datasets"]) == set(DATASETS)
    for name, dataset in report["datasets"].items():
        assert len(set(dataset["origins"])) == 3, name
        scores = dataset["scores"]
        assert set(scores) == METHODS, name
        for method, score in scores.items():
            assert 0 < score["wape"] < 5 and math.isfinite(score["mase"]), (name, method, score)
        # Every method forecasts the same rows: the baselines' bias differs, the volume does not, so a
        # forecast of zero everywhere would score WAPE 1 and bias -1 for each. (A median may be 0 on
        # intermittent series: the median head is held to the looser bound.)
        means = {method: score for method, score in scores.items() if method != MEDIAN_HEAD}
        assert all(-1 < score["bias"] < 1 for score in means.values()), (name, scores)
        assert -1 <= scores[MEDIAN_HEAD]["bias"] < 1, (name, scores)
        assert f"\n{name}: " in result.stdout
    # On daily store transactions (smooth, strongly weekly) every forecaster beats the flat moving
    # average, and the pipeline beats seasonal naive even in quick mode.
    favorita = report["datasets"]["favorita"]["scores"]
    assert favorita[PIPELINE]["wape"] < favorita["seasonal naive"]["wape"]
    for method in (*STATISTICAL, PIPELINE):
        assert favorita[method]["wape"] < favorita["moving average"]["wape"], method


def test_methods_trained_per_seed_are_reported_as_their_mean_with_each_seed_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ is run from the repository root, not installed
    from benchmarks.accuracy import mean_over_seeds, seeded  # noqa: PLC0415
    from retail_forecast.training.metrics import Scores  # noqa: PLC0415

    naive = Scores(wape=1.0, mase=1.0, rmsse=1.0, bias=0.0)
    runs = {
        "seasonal naive": naive,
        seeded(PIPELINE, 0): Scores(wape=0.8, mase=0.9, rmsse=0.7, bias=-0.2),
        seeded(PIPELINE, 2): Scores(wape=0.6, mase=0.7, rmsse=0.5, bias=0.0),
    }
    scores, wapes = mean_over_seeds(runs, [0, 2])
    assert scores["seasonal naive"] == naive
    assert scores[PIPELINE].wape == pytest.approx(0.7) and scores[PIPELINE].bias == pytest.approx(-0.1)
    assert set(scores) == {"seasonal naive", PIPELINE}
    assert wapes == {PIPELINE: [0.8, 0.6]}

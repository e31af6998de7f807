from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retail_forecast.core import features as feat
from retail_forecast.core.data import DataReport, Panel, build_panel, validate_sales
from retail_forecast.core.manifest import Manifest
from retail_forecast.core.schema import Freq
from retail_forecast.training.pipeline import METRICS_FILE, TrainConfig, evaluation_rows, train
from retail_forecast.training.report import REPORT_FILE
from retail_forecast.training.selection import series_contributions
from retail_forecast.training.synth import synthesize


def test_search_evaluation_rows_are_the_full_rows_of_the_sampled_series_only() -> None:
    frame = validate_sales(synthesize(stores=2, items=10, periods=200, freq=Freq.DAILY, seed=2))
    panel, _ = build_panel(frame, Freq.DAILY)
    valid = feat.valid_origins(panel, feat.spec_for(Freq.DAILY))
    origin = panel.n_periods - 1 - 14
    every = set(zip(*evaluation_rows(panel, valid, origin, 14), strict=True))
    among = np.array([0, 3, 11, 19], dtype=np.int64)
    sampled = list(zip(*evaluation_rows(panel, valid, origin, 14, among), strict=True))
    assert len(sampled) == len(set(sampled))
    assert set(sampled) == {row for row in every if row[0] in set(among.tolist())}
    assert {int(s) for s, _, _ in sampled} == {0, 3, 11, 19} & {int(s) for s, _, _ in every}
    assert len(sampled) > 0


@pytest.mark.parametrize("noise", [1.0, 100.0])
def test_the_search_keeps_the_defaults_unless_a_trial_beats_them_by_more_than_the_noise(
    tmp_path: Path, sales_panel: Panel, noise: float
) -> None:
    """On this panel, 40 rounds: trial 2 is ahead of the defaults by about two standard errors."""
    config = TrainConfig(
        horizon=14,
        trials=3,
        max_rows=10_000,
        search_rows=5_000,
        quantiles=(),
        fixed_params={"max_iter": 40},
        search_noise=noise,
    )
    result = train(sales_panel, DataReport(), tmp_path, config, progress=lambda _: None)
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    trials, search = metrics["trials"], metrics["search"]
    assert len(trials) == 3 and trials[0]["ahead_of_defaults"] == 0.0
    for trial in trials:  # ahead of the defaults = the defaults' mean WAPE minus the trial's
        assert trial["ahead_of_defaults"] == pytest.approx(trials[0]["wape"] - trial["wape"])
    clear = [t for t in trials[1:] if t["ahead_of_defaults"] > t["noise"]]
    winner = max(clear, key=lambda t: t["ahead_of_defaults"]) if clear else trials[0]
    assert search["best"] == 2 and winner is (trials[1] if noise == 1.0 else trials[0])  # both cases met
    assert [t["chosen"] for t in trials] == [t is winner for t in trials]
    assert search["winner"] == winner["trial"] and search["defaults_kept"] == (winner is trials[0])
    assert search["best"] == min(trials, key=lambda t: t["wape"])["trial"]
    assert metrics["params"] == winner["params"] == Manifest.load(tmp_path).params
    assert metrics["validation_wape"] == pytest.approx(winner["wape"])
    # the report's search folds are the winner's
    searched = [e.block for e in result.backtest[:-1]]
    assert series_contributions(searched).sum() == pytest.approx(winner["wape"])
    report = (tmp_path / REPORT_FILE).read_text()
    assert search["message"] in report
    assert f"| {winner['trial']} | {winner['wape']:.4f} |" in report

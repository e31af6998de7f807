from __future__ import annotations

import numpy as np
import pytest

from retail_forecast.training.metrics import ForecastBlock, score
from retail_forecast.training.selection import DEFAULTS, choose, compare, series_contributions


def block(series: list[int], actual: list[float], predicted: list[float]) -> ForecastBlock:
    return ForecastBlock(
        series=np.array(series, dtype=np.int64),
        horizon=np.ones(len(series), dtype=np.int64),
        actual=np.array(actual),
        predicted=np.array(predicted),
    )


def one_fold(predicted: list[float], actual: float = 10.0) -> list[ForecastBlock]:
    """One search fold, one row per series (series k at index k), every actual the same."""
    return [block(list(range(len(predicted))), [actual] * len(predicted), predicted)]


def test_series_contributions_sum_to_the_mean_wape_over_folds() -> None:
    scales = np.ones(4), np.ones(4)
    folds = [
        block([0, 0, 2], [5.0, 6.0, 10.0], [4.0, 8.0, 11.0]),
        block([2, 3, 3], [1.0, 0.0, 3.0], [1.5, 1.0, 3.0]),
    ]
    contributions = series_contributions(folds)
    # series 0, 2 and 3 (in that order); 1 is never scored
    expected = [(1 + 2) / 21 / 2, 1 / 21 / 2 + 0.5 / 4 / 2, 1.0 / 4 / 2]
    np.testing.assert_allclose(contributions, expected)
    assert contributions.sum() == pytest.approx(np.mean([score(f, *scales).wape for f in folds]))


def test_a_fold_without_volume_is_left_out() -> None:
    folds = [block([0, 1], [0.0, 0.0], [1.0, 2.0]), block([0, 1], [4.0, 4.0], [5.0, 4.0])]
    np.testing.assert_allclose(series_contributions(folds), [1 / 8, 0.0])
    assert series_contributions([folds[0]]).size == 0


def test_the_paired_standard_error_comes_from_the_spread_of_per_series_differences() -> None:
    defaults = np.array([0.1, 0.2, 0.3, 0.4])
    trial = defaults - np.array([0.01, 0.03, -0.01, 0.01])
    comparison = compare(trial, defaults)
    assert comparison.advantage == pytest.approx(0.04)
    # standard error of a sum of 4 differences: sqrt(4 * sample variance)
    assert comparison.standard_error == pytest.approx(np.sqrt(4 * np.var([0.01, 0.03, -0.01, 0.01], ddof=1)))
    with pytest.raises(ValueError, match="different series"):
        compare(trial[:3], defaults)


def test_defaults_are_kept_when_the_best_trial_is_ahead_by_less_than_the_noise() -> None:
    defaults = [13.0] * 200  # every series 3 off
    # each series 1 better or 1 worse in turn, all 0.02 better: ahead in total, by far less than the spread
    noisy = [13.0 - 0.02 + (1.0 if s % 2 else -1.0) for s in range(200)]
    contributions = [series_contributions(one_fold(p)) for p in (defaults, noisy)]
    choice = choose(contributions)
    assert choice.best == 1 and choice.comparisons[1].advantage > 0  # a plain ranking would pick it
    assert choice.winner == DEFAULTS and choice.defaults_kept
    assert choice.comparisons[1].advantage < choice.noise(1)
    assert choice.message().startswith("defaults kept (trial 1): best trial 2 ahead by")


def test_a_trial_ahead_on_every_series_wins() -> None:
    defaults, better = one_fold([13.0] * 20), one_fold([12.0] * 19 + [13.5])
    choice = choose([series_contributions(defaults), series_contributions(better)])
    assert choice.winner == 1 and not choice.defaults_kept
    assert choice.message().startswith("trial 2 chosen: ahead of the defaults (trial 1) by")


def test_the_lowest_wape_among_trials_clear_of_the_noise_wins_not_the_lowest_overall() -> None:
    defaults = [15.0] * 10  # every series 5 off
    lucky = [10.0] + [15.0] * 9  # far ahead on one series only: 5 ahead with a standard error of 5
    steady = [14.6] * 10  # 0.4 ahead on every series: 4 ahead with no spread
    worse = [16.0] * 10
    choice = choose([series_contributions(one_fold(p)) for p in (defaults, lucky, steady, worse)])
    assert choice.best == 1
    assert choice.comparisons[1].advantage == pytest.approx(choice.comparisons[1].standard_error)
    assert choice.winner == 2
    assert choice.comparisons[3].advantage < 0
    # a larger multiple asks for more: with no spread, the steady trial still clears it
    assert choose([series_contributions(one_fold(p)) for p in (defaults, steady)], multiple=3).winner == 1


def test_one_series_gives_no_noise_estimate_so_the_defaults_stay() -> None:
    choice = choose([series_contributions(one_fold([15.0])), series_contributions(one_fold([10.0]))])
    assert choice.best == 1 and choice.winner == DEFAULTS
    assert choice.noise(1) == float("inf")


def test_a_single_trial_is_the_defaults() -> None:
    choice = choose([series_contributions(one_fold([12.0, 9.0]))])
    assert choice.winner == choice.best == DEFAULTS
    assert choice.message() == "defaults kept (trial 1): no trial scored better on the search folds"
    with pytest.raises(ValueError, match="no trials"):
        choose([])

from __future__ import annotations

import warnings

import numpy as np
import pytest

from retail_forecast.training.metrics import (
    VOLUME_BANDS,
    ForecastBlock,
    band_of_series,
    mean_sales,
    naive_scales,
    pinball,
    pinball_scales,
    quantile_scores,
    score,
    score_by_horizon,
    score_by_volume,
)


def test_scores_match_hand_computation() -> None:
    history = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]])
    mase_scale, rmsse_scale = naive_scales(history, season=2)
    np.testing.assert_allclose(mase_scale, [2.0, 0.0])  # |3-1|, |4-2|; the flat series has no scale
    np.testing.assert_allclose(rmsse_scale, [1.0, 0.0])
    block = ForecastBlock(
        series=np.array([0, 0, 1, 1]),
        horizon=np.array([1, 2, 1, 2]),
        actual=np.array([5.0, 6.0, 10.0, 10.0]),
        predicted=np.array([4.0, 8.0, 11.0, 10.0]),
    )
    scores = score(block, mase_scale, rmsse_scale)
    assert scores.wape == pytest.approx((1 + 2 + 1 + 0) / 31)
    assert scores.bias == pytest.approx((-1 + 2 + 1 + 0) / 31)
    assert scores.mase == pytest.approx(1.5 / 2.0)  # only series 0 has a non-zero scale
    assert scores.rmsse == pytest.approx(np.sqrt((1 + 4) / 2 / 1.0))
    by_h = score_by_horizon(block, mase_scale, rmsse_scale, horizon=2)
    assert by_h[0].wape == pytest.approx(2 / 15)
    assert by_h[1].wape == pytest.approx(2 / 16)


def test_nan_gaps_are_ignored_in_scales() -> None:
    history = np.array([[np.nan, np.nan, 1.0, 3.0, 5.0]])
    mase_scale, rmsse_scale = naive_scales(history, season=1)
    np.testing.assert_allclose(mase_scale, [2.0])
    np.testing.assert_allclose(rmsse_scale, [4.0])


def test_a_series_younger_than_one_season_has_no_scale_and_raises_no_warning() -> None:
    history = np.array([[np.nan, np.nan, np.nan, 2.0], [1.0, 2.0, 4.0, 7.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mase_scale, rmsse_scale = naive_scales(history, season=2)
    np.testing.assert_allclose(mase_scale, [0.0, 4.0])  # (|4-1| + |7-2|) / 2
    np.testing.assert_allclose(rmsse_scale, [0.0, (1 + 4 + 9) / 3])


def test_pinball_charges_the_level_below_and_its_complement_above() -> None:
    actual = np.array([10.0, 10.0, 10.0])
    predicted = np.array([6.0, 10.0, 12.0])
    np.testing.assert_allclose(pinball(actual, predicted, 0.9), [0.9 * 4, 0.0, 0.1 * 2])
    np.testing.assert_allclose(pinball(actual, predicted, 0.1), [0.1 * 4, 0.0, 0.9 * 2])


def test_quantile_scores_match_hand_computation() -> None:
    """Scaled pinball as M5 Uncertainty: per series, mean loss over the horizon / mean |one-step diff|
    of its history, averaged over series with a scale; coverage counts both interval ends as inside."""
    history = np.array([[1.0, 3.0, np.nan, 5.0], [4.0, 4.0, 4.0, 4.0]])
    scale = pinball_scales(history)
    np.testing.assert_allclose(scale, [2.0, 0.0])  # |3-1|; the NaN breaks the other pairs; flat: 0
    block = ForecastBlock(
        series=np.array([0, 0, 1, 1]),
        horizon=np.array([1, 2, 1, 2]),
        actual=np.array([5.0, 8.0, 4.0, 0.0]),
        predicted=np.zeros(4),
    )
    quantiles = np.array([[4.0, 6.0], [2.0, 7.0], [4.0, 4.0], [1.0, 3.0]])  # q0.2, q0.8
    scores = quantile_scores(block, quantiles, (0.2, 0.8), scale, horizon=2)
    low = (0.2 * 1 + 0.2 * 6) / 2 / 2.0  # series 0 only: under by 1 and by 6
    high = (0.2 * 1 + 0.8 * 1) / 2 / 2.0  # over by 1 (level 0.8 charges 0.2), under by 1
    assert scores.pinball_by_level == pytest.approx({0.2: low, 0.8: high})
    assert scores.scaled_pinball == pytest.approx((low + high) / 2)
    assert scores.coverage == pytest.approx(2 / 4)  # 5 in [4,6], 8 above 7, 4 in [4,4], 0 below 1
    assert scores.coverage_by_horizon == pytest.approx([1.0, 0.0])
    assert scores.open_coverage == pytest.approx(1 / 4)  # only 5 in (4,6): 4 sits on both ends of [4,4]
    assert scores.share_below == pytest.approx({0.2: 1 / 4, 0.8: 2 / 4})  # 0 < 1; 5 < 6, 0 < 3
    assert scores.share_at_or_below == pytest.approx({0.2: 2 / 4, 0.8: 3 / 4})


def test_a_count_forecast_is_calibrated_when_its_level_falls_within_the_ties() -> None:
    """60 % zeros and a P10 of 0: 60 % at or below it, none strictly below, so 0.1 is straddled (a
    calibrated P10 of count data) although the closed interval covers more than its nominal 80 %."""
    actual = np.array([0.0] * 6 + [1.0, 2.0, 3.0, 9.0])
    block = ForecastBlock(np.zeros(10, dtype=np.int64), np.ones(10, dtype=np.int64), actual, np.zeros(10))
    quantiles = np.column_stack([np.zeros(10), np.full(10, 3.0)])  # P10 0, P90 3
    scores = quantile_scores(block, quantiles, (0.1, 0.9), np.ones(1), horizon=1)
    assert scores.coverage == pytest.approx(0.9)
    assert scores.open_coverage == pytest.approx(0.2)
    assert scores.calibrated(0.1) and scores.calibrated(0.9)  # 0 <= 0.1 <= 0.6; 0.8 <= 0.9 <= 0.9
    shifted = quantile_scores(block, quantiles + 1.0, (0.1, 0.9), np.ones(1), horizon=1)
    assert not shifted.calibrated(0.1)  # 60 % strictly below a P10 of 1
    assert shifted.calibrated(0.1, tolerance=0.5)


def test_volume_bands_have_equal_series_counts_slowest_first() -> None:
    means = np.array([5.0, 0.0, 0.0, 9.0, 0.0, 1.0, 7.0, 3.0])
    evaluated = np.array([0, 1, 2, 3, 4, 5, 6])  # series 7 has no holdout rows
    bands = band_of_series(means, evaluated, 3)
    # ranked 1, 2, 4 (ties in series order), 5, 0, 6, 3 -> bands of 3, 2 and 2 series
    assert bands.tolist() == [1, 0, 0, 2, 0, 1, 2, -1]
    # equal means (intermittent series) never leave a band empty, unlike tercile cut points
    assert sorted(band_of_series(np.zeros(6), np.arange(6), 3).tolist()) == [0, 0, 1, 1, 2, 2]


def test_mean_sales_ignores_gaps_and_is_zero_without_history() -> None:
    history = np.array([[np.nan, 2.0, 4.0], [np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(mean_sales(history), [3.0, 0.0])


def test_scores_by_volume_band_match_hand_computation() -> None:
    # three series: slow (mean 1), medium (mean 5), fast (mean 20); two horizons each
    history = np.array([[1.0, 1.0, 1.0, 1.0], [4.0, 6.0, 4.0, 6.0], [20.0, 20.0, 18.0, 22.0]])
    series = np.array([0, 0, 1, 1, 2, 2])
    horizon = np.array([1, 2, 1, 2, 1, 2])
    actual = np.array([1.0, 1.0, 5.0, 5.0, 20.0, 20.0])
    model = ForecastBlock(series, horizon, actual, np.array([2.0, 2.0, 5.0, 4.0, 21.0, 19.0]))
    naive = ForecastBlock(series, horizon, actual, np.array([1.0, 1.0, 4.0, 6.0, 18.0, 22.0]))
    slow, medium, fast = score_by_volume({"model": model, "seasonal_naive": naive}, history, season=2)
    assert (slow.name, medium.name, fast.name) == VOLUME_BANDS
    assert [b.series for b in (slow, medium, fast)] == [1, 1, 1]
    assert slow.mean_sales == (1.0, 1.0)
    assert fast.mean_sales == (20.0, 20.0)
    assert [b.volume_share for b in (slow, medium, fast)] == pytest.approx([2 / 52, 10 / 52, 40 / 52])
    assert slow.scores["model"].wape == pytest.approx(1.0)  # over-forecast by 1 on a volume of 2
    assert slow.scores["model"].bias == pytest.approx(1.0)
    assert medium.scores["model"].wape == pytest.approx(0.1)
    assert medium.scores["model"].bias == pytest.approx(-0.1)
    assert fast.scores["model"].wape == pytest.approx(0.05)
    assert fast.scores["model"].bias == pytest.approx(0.0)
    assert slow.scores["seasonal_naive"].wape == pytest.approx(0.0)
    assert fast.scores["seasonal_naive"].wape == pytest.approx(0.1)
    assert fast.scores["model"].mase == pytest.approx(0.5)  # mean abs error 1, mean abs seasonal diff 2
    row = fast.as_dict()
    assert row["band"] == "fast"
    assert row["model"] == fast.scores["model"].as_dict()

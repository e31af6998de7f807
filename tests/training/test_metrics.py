from __future__ import annotations

import warnings

import numpy as np
import pytest

from retail_forecast.training.metrics import (
    ForecastBlock,
    naive_scales,
    pinball,
    pinball_scales,
    quantile_scores,
    score,
    score_by_horizon,
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

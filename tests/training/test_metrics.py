from __future__ import annotations

import numpy as np
import pytest

from retail_forecast.training.metrics import ForecastBlock, naive_scales, score, score_by_horizon


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

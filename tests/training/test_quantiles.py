from __future__ import annotations

import numpy as np
import pytest

from retail_forecast.training import quantiles


def test_levels_parse_sorted_and_refuse_what_cannot_name_an_output() -> None:
    assert quantiles.parse_levels("0.9,0.1,0.5") == (0.1, 0.5, 0.9)
    assert quantiles.parse_levels("0.025, 0.975") == (0.025, 0.975)
    assert quantiles.parse_levels("none") == ()
    for bad in ("0", "1", "0.5,0.5", "0.0001", "1.5", "p10"):
        with pytest.raises(ValueError, match="quantile"):
            quantiles.parse_levels(bad)


def test_monotone_is_a_running_maximum_over_levels() -> None:
    crossing = np.array([[5.0, 3.0, 4.0, 9.0], [1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(quantiles.monotone(crossing), [[5, 5, 5, 9], [1, 2, 3, 4]])


def test_heads_learn_their_levels() -> None:
    """On data with a known distribution, each head's forecasts leave about its level of the targets
    below them (in sample)."""
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 1, size=(20_000, 3)).astype(np.float32)
    features[:, 1] = 1.0  # the scale column: targets already in sales units
    target = rng.gamma(2.0, 1.0 + 3.0 * features[:, 0])
    heads = quantiles.fit_heads((0.1, 0.5, 0.9), features, target, seed=0)
    forecasts = quantiles.sklearn_quantiles(heads, features, scale_index=1)
    below = (target[:, None] <= forecasts).mean(axis=0)
    np.testing.assert_allclose(below, [0.1, 0.5, 0.9], atol=0.03)


def test_a_low_head_on_a_mass_of_zeros_still_learns_the_busy_rows() -> None:
    """A fifth of the targets are 0 (closed or slow rows), so the 0.1 level starts on the zero mass; the
    busy rows' P10 must still rise above 0 while the slow rows' stays exactly 0."""
    rng = np.random.default_rng(3)
    features = rng.uniform(0, 1, size=(20_000, 3)).astype(np.float32)
    features[:, 1] = 1.0
    slow = features[:, 0] < 0.4
    target = np.where(slow, rng.poisson(0.3, len(features)), rng.poisson(20.0, len(features))).astype(float)
    assert np.quantile(target, 0.1) == 0
    (head,) = quantiles.fit_heads((0.1,), features, target, seed=0)
    p10 = quantiles.sklearn_quantiles([head], features, scale_index=1)[:, 0]
    assert np.median(p10[~slow]) > 10  # Poisson(20)'s P10 is 14
    assert (p10[slow & (features[:, 0] < 0.35)] == 0).mean() > 0.95

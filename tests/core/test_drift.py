"""The drift reference, PSI and the rolling sketch, on distributions whose shift is known."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from retail_forecast.core import drift
from retail_forecast.core.features import SPECS
from retail_forecast.core.manifest import DriftReference

NAMES = ["horizon", "price", "promo", "event"]


def sample(
    n: int, seed: int, *, price_shift: float = 0.0, promo_share: float = 0.1
) -> npt.NDArray[np.float32]:
    """horizon uniform 1..28, price continuous, promo 0/1, event always 0: float32 rows as served."""
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.integers(1, 29, n),
            rng.lognormal(1.0, 0.3, n) + price_shift,
            rng.random(n) < promo_share,
            np.zeros(n),
        ]
    ).astype(np.float32)


# What sampling alone makes of an unchanged distribution: 20,000 rows bin about 3 x FOLD_SAMPLE of them.
NOISE = 0.03


def scores_of(reference: DriftReference, rows: npt.NDArray[np.float32]) -> dict[str, float]:
    """PSI of `rows` served as requests of 50 rows."""
    sketch = drift.RollingSketch(drift.Bins(reference, NAMES), min_rows=1)
    for request in np.array_split(rows, len(rows) // 50):
        sketch.observe(request)
    return sketch.scores()[1]


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    return drift.reference_of(sample(50_000, seed=0), NAMES)


def test_the_reference_has_deciles_and_the_share_of_each_bin(reference: DriftReference) -> None:
    price = reference.features[1]
    assert len(price.edges) == 9 and len(price.shares) == 10
    assert price.shares == pytest.approx([0.1] * 10, abs=1e-3)
    assert reference.rows == 50_000


def test_discrete_features_get_one_bin_per_value(reference: DriftReference) -> None:
    horizon, _, promo, event = reference.features
    # (-inf, 0] holds the 0s and (0, 1] the 1s, kept apart; (1, inf) is empty if 1 is a decile too
    assert promo.edges[0] == 0.0 and promo.edges[1:] in ([], [1.0])
    assert promo.shares[:2] == pytest.approx([0.9, 0.1], abs=0.01)
    assert event.edges == [0.0] and event.shares == [1.0, 0.0]
    assert horizon.edges == sorted(set(horizon.edges)) and len(horizon.edges) == 9
    assert sum(horizon.shares) == pytest.approx(1.0)


def test_the_same_distribution_scores_near_zero(reference: DriftReference) -> None:
    scores = scores_of(reference, sample(20_000, seed=1))
    assert set(scores) == set(NAMES)
    assert max(scores.values()) < NOISE, scores


def test_a_shifted_feature_scores_above_the_significant_level_and_only_it(reference: DriftReference) -> None:
    scores = scores_of(reference, sample(20_000, seed=2, price_shift=1.0))
    assert scores["price"] > 0.25, scores
    assert max(v for k, v in scores.items() if k != "price") < NOISE, scores


def test_a_shift_between_values_of_a_discrete_feature_is_seen(reference: DriftReference) -> None:
    scores = scores_of(reference, sample(20_000, seed=3, promo_share=0.5))
    assert scores["promo"] > 0.25, scores
    assert scores["price"] < NOISE


def test_a_value_never_seen_in_training_is_drift(reference: DriftReference) -> None:
    rows = sample(20_000, seed=4)
    rows[:4000, 3] = 1.0  # events on a fifth of the rows; training never had one
    scores = scores_of(reference, rows)
    assert scores["event"] > 0.25, scores


def test_rows_with_nan_or_infinity_are_counted_nowhere(reference: DriftReference) -> None:
    bins = drift.Bins(reference, NAMES)
    rows = sample(1000, seed=5)
    rows[:10, 1] = np.nan
    rows[10:20, 2] = np.inf
    assert (bins.counts(rows).sum(axis=1) == 980).all()
    # training rows likewise: the reference is taken from finite rows only
    assert drift.reference_of(rows, NAMES).rows == 980


def test_psi_is_the_textbook_sum_with_empty_bins_floored() -> None:
    expected = np.array([[0.5, 0.5, 0.0]])
    counts = np.array([[25, 75, 0]], dtype=np.int64)
    want = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert drift.psi(expected, counts)[0] == pytest.approx(want)
    empty = np.array([[100, 0, 0]], dtype=np.int64)
    floored = (1 - 0.5) * np.log(1 / 0.5) + (drift.PSI_EPSILON - 0.5) * np.log(drift.PSI_EPSILON / 0.5)
    assert drift.psi(expected, empty)[0] == pytest.approx(floored)


def test_the_position_in_the_year_is_not_monitored() -> None:
    daily, weekly = (drift.monitored(spec.names) for spec in SPECS.values())
    assert "target_weekday" in daily and "horizon" in daily and "lag_0" in daily
    for names in (daily, weekly):
        assert not {"target_month", "target_day_of_year", "target_week_of_year", "target_day_of_month"} & set(
            names
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_window_rolls_and_scores_need_enough_rows(reference: DriftReference) -> None:
    clock = Clock()
    sketch = drift.RollingSketch(
        drift.Bins(reference, NAMES), window_seconds=60, windows=3, min_rows=500, clock=clock
    )
    sketch.observe(sample(400, seed=6, price_shift=1.0))
    assert sketch.scores() == (400, {})  # too few rows for a score
    clock.now = 90  # the second slot
    sketch.observe(sample(400, seed=7, price_shift=1.0))
    rows, scores = sketch.scores()
    assert rows == 800 and scores["price"] > 0.25
    clock.now = 150  # the third slot: still both
    sketch.observe(sample(2000, seed=8))
    assert sketch.scores()[0] == 2800
    clock.now = 185  # the fourth: the first slot's rows have left the window, the ring reuses its entry
    sketch.observe(sample(2000, seed=9))
    rows, scores = sketch.scores()
    assert rows == 4400
    clock.now = 400  # three quiet slots later: nothing left in the window
    assert sketch.scores()[0] == 0


def test_rows_wait_for_a_fold_and_each_sampled_row_stands_for_its_share(reference: DriftReference) -> None:
    sketch = drift.RollingSketch(drift.Bins(reference, NAMES), min_rows=1)
    for seed in range(3):  # a fold of 2 x 4097 rows, then one of 4097 at the scrape: both sampled
        sketch.observe(sample(drift.FOLD_ROWS // 2 + 1, seed=seed))
    assert sketch.scores()[0] == 3 * (drift.FOLD_ROWS // 2 + 1)

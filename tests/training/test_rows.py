from __future__ import annotations

import numpy as np
import pytest

from retail_forecast.core import features as feat
from retail_forecast.core.data import Panel, build_panel, validate_sales
from retail_forecast.core.schema import Freq
from retail_forecast.training import rows
from retail_forecast.training.synth import synthesize

HORIZON = 14


@pytest.fixture(scope="module")
def panel() -> Panel:
    # 60 series with late launches and discontinued items, so series spans differ.
    frame = validate_sales(synthesize(stores=3, items=20, periods=200, freq=Freq.DAILY, seed=5))
    built, report = build_panel(frame, Freq.DAILY)
    assert report.series_starting_late and report.series_ending_early
    return built


def possible_rows(panel: Panel, valid: np.ndarray, horizon: int, cutoff: int) -> set[tuple[int, int, int]]:
    """The definition, one triple at a time: valid origin, observed target at or before the cutoff."""
    out = set()
    for s, o in zip(*np.nonzero(valid), strict=True):
        for h in range(1, horizon + 1):
            if o + h <= cutoff and not np.isnan(panel.sales[s, o + h]):
                out.add((int(s), int(o), h))
    return out


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 series, so every function crosses many chunk boundaries."""
    monkeypatch.setattr(rows, "CHUNK_CELLS", 7 * 200)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("cutoff", [199, 150])
def test_every_possible_row_is_counted_and_drawn_once(panel: Panel, cutoff: int) -> None:
    valid = feat.valid_origins(panel, feat.spec_for(panel.freq))
    expected = possible_rows(panel, valid, HORIZON, cutoff)
    assert rows.count_rows(panel, valid, HORIZON, cutoff) == len(expected)
    series, origin, horizon = rows.draw_rows(panel, valid, HORIZON, cutoff, 1.0, np.random.default_rng(0))
    drawn = list(zip(series.tolist(), origin.tolist(), horizon.tolist(), strict=True))
    assert len(drawn) == len(set(drawn)) == len(expected)
    assert set(drawn) == expected


@pytest.mark.usefixtures("small_chunks")
def test_a_sample_keeps_the_same_share_of_every_series(panel: Panel) -> None:
    valid = feat.valid_origins(panel, feat.spec_for(panel.freq))
    cutoff = panel.n_periods - 1
    possible = np.zeros(panel.n_series)
    for s, _, _ in possible_rows(panel, valid, HORIZON, cutoff):
        possible[s] += 1
    keep = 0.2
    series, origin, horizon = rows.draw_rows(panel, valid, HORIZON, cutoff, keep, np.random.default_rng(3))
    drawn = list(zip(series.tolist(), origin.tolist(), horizon.tolist(), strict=True))
    assert len(drawn) == len(set(drawn))
    assert set(drawn) <= possible_rows(panel, valid, HORIZON, cutoff)
    # Binomial: the total within 4 standard deviations, every series near its own share.
    total = possible.sum()
    assert abs(len(drawn) - keep * total) < 4 * np.sqrt(total * keep * (1 - keep))
    per_series = np.bincount(series, minlength=panel.n_series)
    has_rows = possible > 500
    share = per_series[has_rows] / possible[has_rows]
    assert np.all(np.abs(share - keep) < 0.06), share


@pytest.mark.usefixtures("small_chunks")
def test_chunked_features_equal_the_whole_panel_features(panel: Panel) -> None:
    spec = feat.spec_for(panel.freq)
    valid = feat.valid_origins(panel, spec)
    series, origin, horizon = rows.draw_rows(panel, valid, HORIZON, 199, 0.3, np.random.default_rng(1))
    shuffle = np.random.default_rng(2).permutation(len(series))
    picked = series[shuffle], origin[shuffle], horizon[shuffle]
    expected = feat.build_features(panel, *picked, spec)
    np.testing.assert_array_equal(rows.build_features(panel, picked, spec), expected)


def test_rows_are_the_least_of_possible_rows_observed_sales_the_budget_and_a_limit() -> None:
    per_row = rows.row_bytes(43)
    budget = per_row * 4_000

    def plan(possible: int, observed: int, limit: int | None = None) -> rows.RowPlan:
        return rows.plan_rows(possible, observed, budget, 43, limit)

    assert (plan(10_000, 9_000).rows, plan(10_000, 9_000).keep) == (4_000, 0.4)
    assert "memory budget's 4000" in plan(10_000, 9_000).describe()
    assert (plan(10_000, 2_000).rows, plan(10_000, 2_000).keep) == (2_000, 0.2)
    assert "one per observed sale" in plan(10_000, 2_000).describe()
    assert (plan(10_000, 9_000, limit=1_000).rows, plan(10_000, 9_000, limit=1_000).keep) == (1_000, 0.1)
    assert "--max-rows" in plan(10_000, 9_000, limit=1_000).describe()
    assert (plan(3_000, 9_000).rows, plan(3_000, 9_000).keep) == (3_000, 1.0)
    assert "all of them" in plan(3_000, 9_000).describe()
    # Ten times the observed sales give ten times the rows, until the budget binds.
    assert plan(10**9, 300).rows * 10 == plan(10**9, 3_000).rows
    assert rows.plan_rows(10**9, 10**8, per_row * 40_000, 43, None).rows == 40_000


def test_search_folds_score_a_fixed_random_sample_of_series_only_when_there_are_more() -> None:
    assert rows.sample_series(3_000, 3_000, seed=0) is None
    picked = rows.sample_series(30_000, 3_000, seed=0)
    assert picked is not None
    assert len(np.unique(picked)) == len(picked) == 3_000
    assert np.all(np.diff(picked) > 0) and picked[0] >= 0 and picked[-1] < 30_000
    # Spread over every series, not the first ones; the same for every trial of a seed.
    assert np.histogram(picked, bins=10, range=(0, 30_000))[0].min() > 200
    np.testing.assert_array_equal(picked, rows.sample_series(30_000, 3_000, seed=0))
    other = rows.sample_series(30_000, 3_000, seed=1)
    assert other is not None and not np.array_equal(picked, other)

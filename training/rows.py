"""Which training rows a fit sees, and their features, built one chunk of series at a time.

Every (series, origin, horizon) triple with a full history window at the origin and an observed target
is a possible training row: about S × T × H of them (52 million for 3,000 daily series × 730 days × 28),
far more than a fit needs and more than memory holds once featurised. Rows of neighbouring origins of
one series are near copies of each other, so what a fit learns grows with the observed sales, not with
the triples. The rule:

    rows  = min(possible rows, observed sales, memory budget / bytes one row costs in a fit)
    keep each possible row with the same probability rows / possible rows

(each observed sale is, on average, the target of one training row), so a larger data set trains on
proportionally more rows until the memory budget is reached, every series contributes in proportion to
its history, and memory stays bounded whatever the data's size. Candidates are drawn
and featurised per chunk of series: no array of all possible rows, and no feature pass over the whole
panel, ever exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from retail_forecast.core import features as feat
from retail_forecast.core.data import Panel

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Rows = tuple[IntArray, IntArray, IntArray]

# What one training row with F features costs at the peak of a fit, in bytes: the stored float32 row
# (4F), the copy a fold's selection makes (4F), scikit-learn's float64 conversion (8F) and its
# train/validation split of it (8F), the binned uint8 copies (2F), plus per-row targets, gradients and
# predictions. Measured: a 2.37 GB peak RSS for a fit on 1.6 M rows of 43 features, about 1,300 bytes a row
# (benchmarks/training.py prints the peak of every run).
BYTES_PER_FEATURE: Final = 28
BYTES_PER_ROW: Final = 96
# Search folds are scored on at most this many series (a random sample, the same for every trial): a
# trial's WAPE ranks parameters as well on 3,000 series as on 30,000, and scoring is a prediction per row.
SEARCH_SERIES: Final = 3_000
# Candidate (series, period) cells examined at once while drawing rows or building features.
CHUNK_CELLS: Final = 2_000_000


def row_bytes(n_features: int) -> int:
    """Peak bytes one training row of `n_features` features costs in a fit."""
    return BYTES_PER_FEATURE * n_features + BYTES_PER_ROW


def budget_rows(memory_budget_bytes: int, n_features: int) -> int:
    """How many training rows the memory budget holds."""
    return max(memory_budget_bytes // row_bytes(n_features), 1)


def series_chunks(panel: Panel) -> Iterator[slice]:
    """Consecutive slices of series, each covering about `CHUNK_CELLS` (series, period) cells."""
    step = max(CHUNK_CELLS // max(panel.n_periods, 1), 1)
    for start in range(0, panel.n_series, step):
        yield slice(start, min(start + step, panel.n_series))


def _row_masks(
    panel: Panel, valid: BoolArray, chunk: slice, horizon: int, cutoff: int
) -> Iterator[tuple[int, BoolArray]]:
    """Per horizon h, a [chunk series, origin] mask of the possible rows: valid origin o, observed target
    o + h at or before `cutoff`."""
    observed = ~np.isnan(panel.sales[chunk])
    for h in range(1, min(horizon, cutoff) + 1):
        last_origin = cutoff - h
        yield h, valid[chunk, : last_origin + 1] & observed[:, h : last_origin + h + 1]


def count_rows(panel: Panel, valid: BoolArray, horizon: int, cutoff: int) -> int:
    """The number of possible training rows with a target at or before `cutoff`."""
    return sum(
        int(np.count_nonzero(mask))
        for chunk in series_chunks(panel)
        for _, mask in _row_masks(panel, valid, chunk, horizon, cutoff)
    )


def draw_rows(
    panel: Panel,
    valid: BoolArray,
    horizon: int,
    cutoff: int,
    keep: float,
    rng: np.random.Generator,
) -> Rows:
    """Each possible row (target at or before `cutoff`) independently with probability `keep`, by series."""
    parts: list[Rows] = []
    for chunk in series_chunks(panel):
        for h, mask in _row_masks(panel, valid, chunk, horizon, cutoff):
            series, origin = np.nonzero(mask)
            if keep < 1.0:
                picked = rng.random(len(series)) < keep
                series, origin = series[picked], origin[picked]
            parts.append(
                (
                    series.astype(np.int64) + chunk.start,
                    origin.astype(np.int64),
                    np.full(len(series), h, np.int64),
                )
            )
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def build_features(panel: Panel, rows: Rows, spec: feat.FeatureSpec) -> npt.NDArray[np.float32]:
    """`features.build_features` for any number of rows, one chunk of series at a time (bounded memory).

    The features of a row depend on its own series only, so a panel cut down to a chunk of series gives
    the same values as the whole panel, without prefix sums over every series for every chunk.
    """
    series, origin, horizon = rows
    out = np.empty((len(series), len(spec.names)), dtype=np.float32)
    order = np.argsort(series, kind="stable")
    sorted_series = series[order]
    for chunk in series_chunks(panel):
        lo, hi = np.searchsorted(sorted_series, [chunk.start, chunk.stop])
        if lo == hi:
            continue
        picked = order[lo:hi]
        out[picked] = feat.build_features(
            panel.select_series(chunk), series[picked] - chunk.start, origin[picked], horizon[picked], spec
        )
    return out


def sample_series(n_series: int, limit: int, seed: int) -> IntArray | None:
    """A sorted random `limit` of the series, or None (all of them) when there are no more than that."""
    if n_series <= limit:
        return None
    picked = np.random.default_rng(seed).choice(n_series, size=limit, replace=False)
    return np.sort(picked).astype(np.int64)


@dataclass(frozen=True)
class RowPlan:
    """How many rows training uses and why: the figures the report states."""

    possible: int
    observed: int
    budget: int
    limit: int | None
    rows: int

    @property
    def keep(self) -> float:
        return min(self.rows / self.possible, 1.0) if self.possible else 0.0

    def describe(self) -> str:
        if self.rows == self.possible:
            reason = "all of them"
        elif self.limit is not None and self.rows == self.limit:
            reason = f"the --max-rows limit {self.limit}"
        elif self.rows == self.budget:
            reason = f"the memory budget's {self.budget}; {self.observed} observed sales"
        else:
            reason = f"one per observed sale; the memory budget holds {self.budget}"
        return (
            f"{self.rows} training rows of {self.possible} possible ({self.keep:.2%} of each series' rows; "
            f"{reason})"
        )


def plan_rows(
    possible: int, observed: int, memory_budget_bytes: int, n_features: int, limit: int | None
) -> RowPlan:
    """Rows = min(possible, observed sales, memory budget rows, an explicit limit if one is given)."""
    budget = budget_rows(memory_budget_bytes, n_features)
    rows = min(possible, observed, budget, limit if limit is not None else possible)
    return RowPlan(possible=possible, observed=observed, budget=budget, limit=limit, rows=rows)

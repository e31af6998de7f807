"""Input drift: how far the features a model is served have moved from the ones it was trained on.

Training records, per monitored feature, the training rows' deciles as bin edges (deduplicated, so a
discrete feature gets one bin per value it takes) and the share of rows in each bin: the manifest's
`drift_reference`. Serving counts the rows it scores into the same bins over a rolling window and scores
each feature with the population stability index, PSI = sum((a - e) * ln(a / e)) over the bins, with a
and e the served and reference shares, both floored at `PSI_EPSILON` (an empty bin would be infinite).
0.1 is the customary "some shift", 0.25 the "significant shift" the alert uses.

Bins are right-closed, (e[i-1], e[i]]: a point mass lands in the bin its edge closes, so a 0/1 feature
that is 0 in 90 % of the rows still keeps its 0s and 1s apart. Rows holding NaN or infinity are counted
nowhere: the service refuses them (v2 at parsing, /v1/forecast when its features overflow), so they are
never part of what the model is served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from retail_forecast.core.features import CALENDAR
from retail_forecast.core.manifest import DriftReference, FeatureReference

Rows = npt.NDArray[np.float32]
REFERENCE_QUANTILES: Final = tuple(k / 10 for k in range(1, 10))
# Training rows the reference is taken from at most: a bin's share from 200,000 rows is within 0.2
# percentage points of the population's (3 standard errors), and the cost stays a fraction of a second.
REFERENCE_ROWS: Final = 200_000
PSI_EPSILON: Final = 1e-4
# A target's position in the year: a serving window covers a few weeks of it by construction, so its
# PSI against a training set spanning years would always read as drift. Weekday covers every value
# every week, and stays monitored.
POSITION_IN_YEAR: Final = frozenset(
    f"target_{field}" for fields in CALENDAR.values() for field in fields if field != "weekday"
)
# The rolling window: WINDOWS slots of WINDOW_SECONDS (the last hour), and the fewest rows in it for a
# score (below, the sampling noise alone, about (bins - 1) / rows, would approach the thresholds).
WINDOW_SECONDS: Final = 300.0
WINDOWS: Final = 12
MIN_ROWS: Final = 1000
# Served rows wait in a list (an append per request) and are binned together once this many have come,
# or at a scrape: the per-request cost stays a list append. A fold bins a random sample of at most
# FOLD_SAMPLE of its rows, each standing for rows / sample of them: binning every row would cost about a
# third of what the model costs per row; at most 1 in 8 keeps the hook at about 1-2 % of a request's CPU
# time (benchmarks/serving.py). Light traffic (under 1,024 rows between scrapes) is binned in full.
FOLD_ROWS: Final = 8192
FOLD_SAMPLE: Final = 1024


def monitored(names: Sequence[str]) -> list[str]:
    """The features drift is reported for: all but the target's position in the year."""
    return [name for name in names if name not in POSITION_IN_YEAR]


def reference_of(rows: Rows, names: Sequence[str]) -> DriftReference:
    """The reference of training feature rows [N, F] (columns in `names` order): edges and shares."""
    finite = rows[np.isfinite(rows).all(axis=1)]
    if len(finite) == 0:
        raise ValueError("no finite feature rows to take a drift reference from")
    chosen = monitored(names)
    values = finite[:, [list(names).index(name) for name in chosen]]
    edges = [
        np.unique(np.quantile(column, REFERENCE_QUANTILES, method="inverted_cdf")) for column in values.T
    ]
    counts = bin_counts(values, padded_edges(edges))
    return DriftReference(
        rows=len(finite),
        features=[
            FeatureReference(
                name=name,
                edges=[float(e) for e in feature_edges],  # float32 values: exact as JSON doubles
                shares=[float(c) for c in counts[i, : len(feature_edges) + 1] / len(values)],
            )
            for i, (name, feature_edges) in enumerate(zip(chosen, edges, strict=True))
        ],
    )


def padded_edges(edges: Sequence[Sequence[float] | npt.NDArray[np.float32]]) -> Rows:
    """Each feature's edges in one [M, B - 1] float32 array, padded with +inf (which no value exceeds)."""
    width = max(len(e) for e in edges)
    padded = np.full((len(edges), width), np.inf, dtype=np.float32)
    for i, feature_edges in enumerate(edges):
        padded[i, : len(feature_edges)] = feature_edges
    return padded


def bin_counts(values: Rows, edges: Rows) -> npt.NDArray[np.int64]:
    """Rows per feature and bin [M, B] of `values` [N, M]; rows with NaN or infinity are left out.

    A value's bin is the number of its feature's edges below it (right-closed bins): one comparison of
    all values per edge rank, the fastest of the ways tried (a searchsorted per feature; an [N, M, K] cube).
    """
    values = values[np.isfinite(values).all(axis=1)]
    n_features, n_bins = edges.shape[0], edges.shape[1] + 1
    index = np.zeros(values.shape, dtype=np.intp)
    for rank in range(edges.shape[1]):
        index += values > edges[:, rank]
    offsets = np.arange(n_features) * n_bins
    counts = np.bincount((index + offsets).ravel(), minlength=n_features * n_bins)
    return counts.reshape(n_features, n_bins).astype(np.int64)


def psi(
    expected: npt.NDArray[np.float64], counts: npt.NDArray[np.int64] | npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """PSI per feature of served `counts` [M, B] against reference shares `expected` [M, B].

    Bins a feature does not have are 0 on both sides and add nothing.
    """
    totals = counts.sum(axis=1, keepdims=True)
    actual = counts / np.maximum(totals, 1)
    present = (expected > 0) | (counts > 0)
    a = np.maximum(actual, PSI_EPSILON)
    e = np.maximum(expected, PSI_EPSILON)
    terms = np.where(present, (a - e) * np.log(a / e), 0.0)
    result: npt.NDArray[np.float64] = terms.sum(axis=1)
    return result


class Bins:
    """A reference as arrays: which columns of a feature row, their edges, their reference shares."""

    def __init__(self, reference: DriftReference, names: Sequence[str]) -> None:
        self.names = [f.name for f in reference.features]
        self.columns = [list(names).index(name) for name in self.names]
        self.edges = padded_edges([f.edges for f in reference.features])
        self.n_bins = self.edges.shape[1] + 1
        self.expected = np.zeros((len(self.names), self.n_bins))
        for i, f in enumerate(reference.features):
            self.expected[i, : len(f.shares)] = f.shares

    def counts(self, rows: Rows) -> npt.NDArray[np.int64]:
        """Served feature rows [N, F] per monitored feature and bin [M, B]."""
        return bin_counts(rows[:, self.columns], self.edges)


class RollingSketch:
    """Served rows binned per time slot, the last `windows` slots kept: memory is windows x features x bins.

    Thread-safe: v2 requests observe on the event loop, /v1/forecast on its threads, scrapes read.
    """

    def __init__(
        self,
        bins: Bins,
        *,
        window_seconds: float = WINDOW_SECONDS,
        windows: int = WINDOWS,
        min_rows: int = MIN_ROWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bins = bins
        self._window_seconds = window_seconds
        self._min_rows = min_rows
        self._clock = clock
        # rows per slot, feature and bin: estimates (sampled rows, weighted), so not whole numbers
        self._counts = np.zeros((windows, len(bins.names), bins.n_bins))
        self._slots = np.full(windows, -windows - 1, dtype=np.int64)  # the slot each ring entry holds
        self._pending: list[Rows] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(0)

    def observe(self, rows: Rows) -> None:
        """Keep the rows for the next fold (a list append); fold once FOLD_ROWS have come."""
        with self._lock:
            self._pending.append(rows)
            self._pending_rows += len(rows)
            if self._pending_rows >= FOLD_ROWS:
                self._fold()

    def _fold(self) -> None:
        if not self._pending:
            return
        rows = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending, self._pending_rows = [], 0
        weight = 1.0
        if len(rows) > FOLD_SAMPLE:
            weight = len(rows) / FOLD_SAMPLE
            rows = rows[self._rng.integers(0, len(rows), FOLD_SAMPLE)]
        slot = int(self._clock() // self._window_seconds)
        at = slot % len(self._slots)
        if self._slots[at] != slot:
            self._counts[at] = 0
            self._slots[at] = slot
        self._counts[at] += self.bins.counts(rows) * weight

    def scores(self) -> tuple[int, dict[str, float]]:
        """Rows in the window, and PSI per feature (none while fewer than `min_rows` rows)."""
        with self._lock:
            self._fold()
            now = int(self._clock() // self._window_seconds)
            live = now - self._slots < len(self._slots)
            counts = self._counts[live].sum(axis=0)
        rows = round(float(counts[0].sum()))
        if rows < self._min_rows:
            return rows, {}
        return rows, dict(zip(self.bins.names, psi(self.bins.expected, counts).tolist(), strict=True))

"""Which search trial wins: the defaults, unless a trial beats them by more than the search folds' noise.

Trials often score within a few ten-thousandths of each other on the search folds, and which of them
ranks first then depends on the series the folds happen to score (README, "Training at scale"). So each
trial is compared with the defaults (the search's first trial), paired on the rows both forecast: a
trial's mean WAPE over the search folds is a sum of per-series terms (the series' absolute errors in a
fold over that fold's volume, averaged over the folds), so the difference of two trials' mean WAPEs is
the sum of their per-series differences, and its standard error follows from how those differences
spread across the scored series. The unit is the series, not the row: a series' errors are correlated
across its horizons and folds, and the series are what the search folds sample.

The rule (one standard error, as in model selection: keep the simple choice unless the evidence is
clearly against it): a trial qualifies when it is ahead of the defaults by more than `NOISE_MULTIPLE`
standard errors; the qualifying trial with the lowest mean WAPE wins; with none, the defaults are kept.
One, not two, although the best of 7 challengers clears one standard error by chance more often than a
single comparison would: on M5 and Favorita (45 decisions, README "One standard error or two") two
changed 6 picks, 3 for the worse on the holdout, 2 for the better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from retail_forecast.training.metrics import ForecastBlock

FloatArray = npt.NDArray[np.float64]

NOISE_MULTIPLE: Final = 1.0
DEFAULTS: Final = 0  # the index of the defaults among the trials: search_plan puts them first


def series_contributions(blocks: Sequence[ForecastBlock]) -> FloatArray:
    """Each scored series' share of the mean WAPE over `blocks` (one per search fold), in series order:
    summed, they are that mean WAPE. A fold without volume has no WAPE and is left out."""
    scored = [block for block in blocks if float(np.abs(block.actual).sum()) > 0]
    if not scored:
        return np.zeros(0)
    series, position = np.unique(np.concatenate([block.series for block in scored]), return_inverse=True)
    contributions = np.zeros(len(series))
    start = 0
    for block in scored:
        rows = position[start : start + len(block.series)]
        start += len(block.series)
        volume = float(np.abs(block.actual).sum())
        error = np.abs(block.predicted - block.actual)
        contributions += np.bincount(rows, weights=error, minlength=len(series)) / (volume * len(scored))
    return contributions


@dataclass(frozen=True)
class Comparison:
    """A trial against the defaults on the same rows: how far ahead it is (the defaults' mean WAPE minus
    its own; negative when behind) and that difference's standard error over the scored series."""

    advantage: float
    standard_error: float

    def beats_defaults(self, multiple: float) -> bool:
        return self.advantage > multiple * self.standard_error


def compare(trial: FloatArray, defaults: FloatArray) -> Comparison:
    """Paired comparison of two trials' `series_contributions` (same series, same order). With fewer
    than two series the noise cannot be estimated: it is infinite, and no trial beats the defaults."""
    if trial.shape != defaults.shape:
        raise ValueError("trials compared on different series")
    differences = defaults - trial
    count = len(differences)
    if count < 2:
        return Comparison(float(differences.sum()), float("inf"))
    return Comparison(float(differences.sum()), float(np.sqrt(count * np.var(differences, ddof=1))))


@dataclass(frozen=True)
class Choice:
    """The search's decision: `winner` and `best` (lowest mean WAPE) index the trials, `comparisons`
    holds every trial against the defaults (the defaults' own: 0 ahead, no noise)."""

    winner: int
    best: int
    comparisons: list[Comparison]
    multiple: float

    @property
    def defaults_kept(self) -> bool:
        return self.winner == DEFAULTS

    def noise(self, trial: int) -> float:
        return self.multiple * self.comparisons[trial].standard_error

    def message(self) -> str:
        """The decision and why, with trials numbered from 1 as the search's progress lines do."""
        rule = f"noise = {self.multiple:g} standard error(s) of the paired per-series difference"
        if self.defaults_kept:
            if self.best == DEFAULTS:
                return f"defaults kept (trial {DEFAULTS + 1}): no trial scored better on the search folds"
            best = self.comparisons[self.best]
            return (
                f"defaults kept (trial {DEFAULTS + 1}): best trial {self.best + 1} ahead by "
                f"{best.advantage:.5f} < noise {self.noise(self.best):.5f} ({rule})"
            )
        won = self.comparisons[self.winner]
        return (
            f"trial {self.winner + 1} chosen: ahead of the defaults (trial {DEFAULTS + 1}) by "
            f"{won.advantage:.5f} > noise {self.noise(self.winner):.5f} ({rule})"
        )


def choose(contributions: Sequence[FloatArray], multiple: float = NOISE_MULTIPLE) -> Choice:
    """Pick the winner among trials given as `series_contributions`, the defaults first."""
    if not contributions:
        raise ValueError("no trials to choose from")
    comparisons = [compare(trial, contributions[DEFAULTS]) for trial in contributions]
    ahead = [c.advantage for c in comparisons]
    qualifying = [k for k, c in enumerate(comparisons) if k != DEFAULTS and c.beats_defaults(multiple)]
    winner = max(qualifying, key=lambda k: ahead[k]) if qualifying else DEFAULTS
    best = max(range(len(ahead)), key=lambda k: ahead[k])  # ties: the earliest, the defaults first
    return Choice(winner=winner, best=best, comparisons=comparisons, multiple=multiple)

"""Forecast accuracy metrics over a block of (series, horizon) forecasts.

WAPE and bias are volume-weighted over everything; MASE and RMSSE scale each series' errors by its own
in-sample naive errors (seasonal for MASE, one-step for RMSSE as in M5) and average over the series
whose scale is non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Scores:
    wape: float
    mase: float
    rmsse: float
    bias: float

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready: an undefined metric (NaN, e.g. WAPE over zero sales) becomes None."""
        values = {"wape": self.wape, "mase": self.mase, "rmsse": self.rmsse, "bias": self.bias}
        return {name: None if np.isnan(value) else value for name, value in values.items()}


@dataclass(frozen=True)
class ForecastBlock:
    """Actuals and predictions of one evaluation, with each row's series and horizon."""

    series: IntArray
    horizon: IntArray
    actual: FloatArray
    predicted: FloatArray

    def where(self, mask: npt.NDArray[np.bool_]) -> ForecastBlock:
        return ForecastBlock(self.series[mask], self.horizon[mask], self.actual[mask], self.predicted[mask])


def naive_scales(history: FloatArray, season: int) -> tuple[FloatArray, FloatArray]:
    """Per-series in-sample denominators: mean |seasonal diff| (MASE) and mean squared 1-step diff (RMSSE).

    `history` is [S, T] sales up to the forecast origin, NaN outside each series' span.
    """
    seasonal = np.abs(history[:, season:] - history[:, :-season])
    one_step = np.square(history[:, 1:] - history[:, :-1])
    return _row_means_or_zero(seasonal), _row_means_or_zero(one_step)


def _row_means_or_zero(values: FloatArray) -> FloatArray:
    """Each row's mean over its non-NaN values; 0 (no scale) for a row with none, such as a series
    younger than one season, without nanmean's "Mean of empty slice" warning."""
    valid = ~np.isnan(values)
    counts = valid.sum(axis=1)
    sums = np.where(valid, values, 0.0).sum(axis=1)
    means = np.zeros(len(values))
    np.divide(sums, counts, out=means, where=counts > 0)
    return means


def score(block: ForecastBlock, mase_scale: FloatArray, rmsse_scale: FloatArray) -> Scores:
    actual, predicted = block.actual, block.predicted
    error = predicted - actual
    volume = float(np.abs(actual).sum())
    wape = float(np.abs(error).sum() / volume) if volume > 0 else float("nan")
    bias = float(error.sum() / volume) if volume > 0 else float("nan")

    n_series = len(mase_scale)
    counts = np.bincount(block.series, minlength=n_series).astype(float)
    abs_sum = np.bincount(block.series, weights=np.abs(error), minlength=n_series)
    sq_sum = np.bincount(block.series, weights=np.square(error), minlength=n_series)
    present = counts > 0
    mase_ok = present & (mase_scale > 0)
    rmsse_ok = present & (rmsse_scale > 0)
    mase = (
        float(np.mean(abs_sum[mase_ok] / counts[mase_ok] / mase_scale[mase_ok]))
        if mase_ok.any()
        else float("nan")
    )
    rmsse = (
        float(np.mean(np.sqrt(sq_sum[rmsse_ok] / counts[rmsse_ok] / rmsse_scale[rmsse_ok])))
        if rmsse_ok.any()
        else float("nan")
    )
    return Scores(wape=wape, mase=mase, rmsse=rmsse, bias=bias)


def score_by_horizon(
    block: ForecastBlock, mase_scale: FloatArray, rmsse_scale: FloatArray, horizon: int
) -> list[Scores]:
    return [score(block.where(block.horizon == h), mase_scale, rmsse_scale) for h in range(1, horizon + 1)]


def pinball_scales(history: FloatArray) -> FloatArray:
    """Per-series denominator of the scaled pinball loss (M5 Uncertainty): mean |one-step diff| of the
    in-sample history ([S, T], NaN outside each series' span); 0 where undefined."""
    return _row_means_or_zero(np.abs(history[:, 1:] - history[:, :-1]))


def pinball(actual: FloatArray, predicted: FloatArray, level: float) -> FloatArray:
    """The pinball (quantile) loss of each point: under-forecasts cost `level`, over-forecasts 1 - level."""
    error = actual - predicted
    loss: FloatArray = np.maximum(level * error, (level - 1.0) * error)
    return loss


@dataclass(frozen=True)
class QuantileScores:
    """Holdout scores of quantile forecasts; `coverage` is the share of actuals within the interval
    between the lowest and the highest level (both ends included), `open_coverage` without its ends.

    On count data many actuals tie with a forecast (every zero sale at a P10 of 0), so the shares at and
    strictly below a level-tau forecast differ; the forecast is calibrated when `share_below[tau] <= tau
    <= share_at_or_below[tau]`, and the interval's true coverage lies between its open and closed share.
    """

    scaled_pinball: float
    pinball_by_level: dict[float, float]
    coverage: float
    coverage_by_horizon: list[float]
    open_coverage: float
    share_below: dict[float, float]
    share_at_or_below: dict[float, float]

    def calibrated(self, level: float, tolerance: float = 0.0) -> bool:
        """Whether the level's forecasts straddle it: below <= level <= at or below (within tolerance)."""
        return self.share_below[level] - tolerance <= level <= self.share_at_or_below[level] + tolerance


def scaled_pinball(
    series: IntArray, actual: FloatArray, predicted: FloatArray, level: float, scale: FloatArray
) -> float:
    """M5 Uncertainty's SPL for one level: each series' mean pinball loss over its horizon divided by its
    scale, averaged over the series whose scale is non-zero (unweighted, as MASE here)."""
    n_series = len(scale)
    counts = np.bincount(series, minlength=n_series).astype(float)
    losses = np.bincount(series, weights=pinball(actual, predicted, level), minlength=n_series)
    ok = (counts > 0) & (scale > 0)
    return float(np.mean(losses[ok] / counts[ok] / scale[ok])) if ok.any() else float("nan")


def quantile_scores(
    block: ForecastBlock, quantiles: FloatArray, levels: tuple[float, ...], scale: FloatArray, horizon: int
) -> QuantileScores:
    """`quantiles` is [N, Q], one column per level (increasing), for the rows of `block`."""
    by_level = {
        level: scaled_pinball(block.series, block.actual, quantiles[:, k], level, scale)
        for k, level in enumerate(levels)
    }
    inside = (block.actual >= quantiles[:, 0]) & (block.actual <= quantiles[:, -1])
    strictly_inside = (block.actual > quantiles[:, 0]) & (block.actual < quantiles[:, -1])

    def share(mask: npt.NDArray[np.bool_]) -> float:
        return float(inside[mask].mean()) if mask.any() else float("nan")

    def mean(values: npt.NDArray[np.bool_]) -> float:
        return float(values.mean()) if len(values) else float("nan")

    actual = block.actual[:, None]
    return QuantileScores(
        scaled_pinball=float(np.mean(list(by_level.values()))),
        pinball_by_level=by_level,
        coverage=share(np.ones(len(inside), dtype=bool)),
        coverage_by_horizon=[share(block.horizon == h) for h in range(1, horizon + 1)],
        open_coverage=mean(strictly_inside),
        share_below=dict(zip(levels, (mean(c) for c in (actual < quantiles).T), strict=True)),
        share_at_or_below=dict(zip(levels, (mean(c) for c in (actual <= quantiles).T), strict=True)),
    )


# Fast and slow movers: the evaluated series ranked by mean observed sales over their history up to the
# forecast origin, cut into groups of equal series count (ties in series order). Equal counts rather than
# cut points on the means: with many intermittent series, tercile cut points can coincide (all at 0) and
# leave a band empty.
VOLUME_BANDS: Final = ("slow", "medium", "fast")


@dataclass(frozen=True)
class VolumeBand:
    """One band's series, how much of the holdout's volume they carry, and each forecast's scores."""

    name: str
    series: int
    mean_sales: tuple[float, float]
    volume_share: float
    scores: dict[str, Scores]

    def as_dict(self) -> dict[str, object]:
        return {
            "band": self.name,
            "series": self.series,
            "mean_sales_min": _json_number(self.mean_sales[0]),
            "mean_sales_max": _json_number(self.mean_sales[1]),
            "volume_share": _json_number(self.volume_share),
            **{name: s.as_dict() for name, s in self.scores.items()},
        }


def _json_number(value: float) -> float | None:
    return None if np.isnan(value) else value


def mean_sales(history: FloatArray) -> FloatArray:
    """Each series' mean observed sales in `history` ([S, T], NaN outside its span); 0 for none."""
    return _row_means_or_zero(history)


def band_of_series(means: FloatArray, series: IntArray, n_bands: int) -> IntArray:
    """Band (0 = slowest) of each series in `series` by rank of its mean, -1 for the others;
    every band gets len(series) // n_bands series or one more."""
    ranked = series[np.argsort(means[series], kind="stable")]
    bands: IntArray = np.full(len(means), -1, dtype=np.int64)
    bands[ranked] = np.arange(len(ranked)) * n_bands // max(len(ranked), 1)
    return bands


def score_by_volume(
    blocks: dict[str, ForecastBlock], history: FloatArray, season: int, names: tuple[str, ...] = VOLUME_BANDS
) -> list[VolumeBand]:
    """Scores of each forecast (all blocks hold the same rows) per volume band of the series they cover;
    `history` is [S, T] sales up to the forecast origin."""
    first = next(iter(blocks.values()))
    means = mean_sales(history)
    evaluated = np.unique(first.series)
    bands = band_of_series(means, evaluated, len(names))
    mase_scale, rmsse_scale = naive_scales(history, season)
    row_band = bands[first.series]
    total = float(np.abs(first.actual).sum())
    result = []
    for k, name in enumerate(names):
        members = evaluated[bands[evaluated] == k]
        rows = row_band == k
        volume = float(np.abs(first.actual[rows]).sum())
        result.append(
            VolumeBand(
                name=name,
                series=len(members),
                mean_sales=(float(means[members].min()), float(means[members].max()))
                if len(members)
                else (float("nan"), float("nan")),
                volume_share=volume / total if total > 0 else float("nan"),
                scores={
                    forecast: score(block.where(rows), mase_scale, rmsse_scale)
                    for forecast, block in blocks.items()
                },
            )
        )
    return result

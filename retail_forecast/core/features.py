"""Feature definitions for the direct multi-horizon model: the only implementation, for training and serving.

A feature row describes one (series, origin, horizon) triple: it reads sales only at or before the origin
and covariates (price, promo, event, calendar) at the target period origin + horizon, which a retailer
knows in advance. Sales-derived values are divided by the series' recent level (`scale`) so one global
model serves series of any volume; the exported ONNX graph multiplies its output by `scale` again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from retail_forecast.core.data import Panel
from retail_forecast.core.schema import Freq

SPEC_VERSION: Final = "fs1"
# Sales-derived features are relative to this level; the floor keeps near-zero series from exploding.
SCALE_FLOOR: Final = 1.0

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FeatureSpec:
    """The windows each frequency reads; `min_history` is the history a forecast origin needs."""

    freq: Freq
    n_lags: int
    windows: tuple[int, ...]
    level_window: int
    same_phase_seasons: int
    moving_average_window: int

    @property
    def season(self) -> int:
        return self.freq.season

    @property
    def min_history(self) -> int:
        # The trend feature compares the last two level windows; seasonal features reach back at most
        # season * same_phase_seasons + 1 periods (one neighbour either side for long seasons).
        seasonal_reach = self.season * self.same_phase_seasons + (1 if self.season > self.n_lags else 0)
        return max(2 * self.level_window, seasonal_reach, self.n_lags, *self.windows)

    @property
    def names(self) -> list[str]:
        names = ["horizon", "scale"]
        names += [f"lag_{k}" for k in range(self.n_lags)]
        names += [f"same_phase_{k}" for k in range(1, self.same_phase_seasons + 1)]
        names += ["same_phase_mean", "same_phase_prev", "same_phase_next"]
        names += [f"mean_{w}" for w in self.windows]
        names += ["std_level", "zero_share", "periods_since_sale", "trend"]
        names += ["target_" + name for name in CALENDAR[self.freq]]
        names += ["event_target", "event_before_target", "event_share"]
        names += ["promo_target", "promo_origin", "promo_share"]
        names += ["price_vs_level", "price_vs_origin", "log_price"]
        return names

    @property
    def scale_index(self) -> int:
        return self.names.index("scale")


CALENDAR: Final = {
    Freq.DAILY: ("weekday", "day_of_month", "month", "day_of_year"),
    Freq.WEEKLY: ("week_of_year", "month"),
}

SPECS: Final = {
    Freq.DAILY: FeatureSpec(
        Freq.DAILY,
        n_lags=14,
        windows=(7, 14, 28),
        level_window=28,
        same_phase_seasons=4,
        moving_average_window=7,
    ),
    Freq.WEEKLY: FeatureSpec(
        Freq.WEEKLY,
        n_lags=8,
        windows=(4, 13, 26),
        level_window=13,
        same_phase_seasons=1,
        moving_average_window=4,
    ),
}


def spec_for(freq: Freq) -> FeatureSpec:
    return SPECS[freq]


def schema_mismatch(freq: Freq, spec_version: str, names: Sequence[str]) -> str | None:
    """Why a model trained on feature schema (`spec_version`, `names`) cannot be fed the rows this code
    builds, or None when it can. A model sees only numbers: an old model under new features fails on
    width or, worse, forecasts garbage at the same width, and its golden sample (stored rows) passes."""
    computed = spec_for(freq).names
    if spec_version == SPEC_VERSION and list(names) == computed:
        return None
    differing = next(
        (i for i, (theirs, ours) in enumerate(zip(names, computed, strict=False)) if theirs != ours),
        min(len(names), len(computed)),
    )
    theirs = repr(names[differing]) if differing < len(names) else "nothing"
    ours = repr(computed[differing]) if differing < len(computed) else "nothing"
    detail = (
        f"feature {differing} is {theirs} in the model, {ours} here"
        if (theirs, ours) != ("nothing", "nothing")
        else "the same feature names"
    )
    return (
        f"model built with feature spec {spec_version}, this code computes {SPEC_VERSION} "
        f"({len(names)} vs {len(computed)} features; {detail}): "
        "run it with an image of the release that trained it"
    )


def same_phase_offset(horizon: IntArray, season: int, seasons_back: int = 1) -> IntArray:
    """Offset from the origin to the same seasonal phase as the target, `seasons_back` seasons earlier.

    Always <= 0, so it reads history only: for target origin + h it is h - season * ceil(h / season),
    moved back further by whole seasons.
    """
    return horizon - season * (np.ceil(horizon / season).astype(np.int64) + seasons_back - 1)


def valid_origins(panel: Panel, spec: FeatureSpec) -> npt.NDArray[np.bool_]:
    """[S, T] mask: origins whose full `min_history` window lies inside the series' observed span."""
    known = ~np.isnan(panel.sales)
    counts = np.cumsum(known, axis=1)
    window = spec.min_history
    padded = np.concatenate([np.zeros((panel.n_series, 1), dtype=counts.dtype), counts], axis=1)
    ends = np.arange(panel.n_periods)
    starts = ends - window + 1
    full = np.zeros_like(known)
    ok = starts >= 0
    full[:, ok] = (padded[:, ends[ok] + 1] - padded[:, starts[ok]]) == window
    return full


def _window_sum(cum: FloatArray, series: IntArray, origin: IntArray, width: int, back: int = 0) -> FloatArray:
    """Sum of a window of `width` periods ending `back` periods before the origin, from prefix sums."""
    end = origin - back + 1
    return cum[series, end] - cum[series, end - width]


def _prefix(values: FloatArray) -> FloatArray:
    return np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)


def _calendar(panel: Panel, target: IntArray, spec: FeatureSpec) -> list[FloatArray]:
    step = np.timedelta64(panel.freq.days, "D")
    dates = panel.dates.values[0] + target.astype("timedelta64[D]") * step.astype(int)
    stamps = dates.astype("datetime64[D]")
    years = stamps.astype("datetime64[Y]")
    months = stamps.astype("datetime64[M]")
    month = (months - years).astype(int) + 1
    if spec.freq is Freq.DAILY:
        weekday = (stamps.astype(int) + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
        day_of_month = (stamps - months).astype(int) + 1
        day_of_year = (stamps - years).astype(int) + 1
        return [
            weekday.astype(float),
            day_of_month.astype(float),
            month.astype(float),
            day_of_year.astype(float),
        ]
    week_of_year = (stamps - years).astype(int) // 7 + 1
    return [week_of_year.astype(float), month.astype(float)]


def build_features(
    panel: Panel,
    series: IntArray,
    origin: IntArray,
    horizon: IntArray,
    spec: FeatureSpec | None = None,
) -> npt.NDArray[np.float32]:
    """Feature matrix [N, F] (float32, manifest order) for (series, origin, horizon) triples.

    Each origin must be a valid origin (`valid_origins`) and origin + horizon a period of the panel's
    calendar: covariates there may be known (future plans) even when sales are not.
    """
    spec = spec or spec_for(panel.freq)
    series = np.asarray(series, dtype=np.int64)
    origin = np.asarray(origin, dtype=np.int64)
    horizon = np.asarray(horizon, dtype=np.int64)
    target = origin + horizon
    if np.any(horizon < 1) or np.any(target >= panel.n_periods):
        raise ValueError("every target period origin + horizon must lie on the panel's calendar")
    if np.any(origin + 1 < spec.min_history):
        raise ValueError(f"every origin needs {spec.min_history} periods of history")

    # Everything sales-derived reads `history`, in which all periods after each origin are invisible.
    sales = np.nan_to_num(panel.sales, nan=0.0)
    cum_sales = _prefix(sales)
    cum_squares = _prefix(sales * sales)
    cum_zero = _prefix((sales == 0).astype(float))

    level = _window_sum(cum_sales, series, origin, spec.level_window) / spec.level_window
    scale = np.maximum(level, SCALE_FLOOR)

    def history(offset: IntArray | int) -> FloatArray:
        index = origin + offset
        values: FloatArray = sales[series, np.minimum(index, origin)]  # never past the origin
        return values

    columns: list[FloatArray] = [horizon.astype(float), scale]
    columns += [history(-k) / scale for k in range(spec.n_lags)]
    phases = [
        history(same_phase_offset(horizon, spec.season, k)) / scale
        for k in range(1, spec.same_phase_seasons + 1)
    ]
    columns += phases
    first_phase = same_phase_offset(horizon, spec.season, 1)
    columns += [
        np.mean(phases, axis=0),
        history(first_phase - 1) / scale,
        history(np.minimum(first_phase + 1, 0)) / scale,
    ]
    columns += [_window_sum(cum_sales, series, origin, w) / w / scale for w in spec.windows]

    w = spec.level_window
    mean_sq = _window_sum(cum_squares, series, origin, w) / w
    std = np.sqrt(np.maximum(mean_sq - level * level, 0.0))
    zero_share = _window_sum(cum_zero, series, origin, w) / w
    previous_level = _window_sum(cum_sales, series, origin, w, back=w) / w
    trend = (level + 1.0) / (previous_level + 1.0)
    columns += [std / scale, zero_share, _periods_since_sale(sales, series, origin, spec.min_history), trend]

    columns += _calendar(panel, target, spec)

    event = panel.event.astype(float)
    cum_event = _prefix(event)
    columns += [
        event[series, target],
        event[series, target - 1],
        _window_sum(cum_event, series, origin, w) / w,
    ]

    promo = panel.promo
    cum_promo = _prefix(promo)
    columns += [promo[series, target], promo[series, origin], _window_sum(cum_promo, series, origin, w) / w]

    price = panel.price
    known_price = ~np.isnan(price)
    cum_price = _prefix(np.where(known_price, price, 0.0))
    cum_known = _prefix(known_price.astype(float))
    known_in_window = _window_sum(cum_known, series, origin, w)
    price_level = _window_sum(cum_price, series, origin, w) / np.maximum(known_in_window, 1.0)
    target_price = price[series, target]
    origin_price = price[series, origin]
    price_ok = ~np.isnan(target_price) & ~np.isnan(origin_price) & (known_in_window > 0)
    columns += [
        np.where(price_ok, target_price / np.where(price_ok, price_level, 1.0), 1.0),
        np.where(price_ok, target_price / np.where(price_ok, origin_price, 1.0), 1.0),
        np.where(price_ok, np.log(np.where(price_ok, target_price, 1.0)), 0.0),
    ]
    return np.column_stack(columns).astype(np.float32)


def _periods_since_sale(sales: FloatArray, series: IntArray, origin: IntArray, cap: int) -> FloatArray:
    """Periods since the last non-zero sale at or before the origin, capped (intermittent demand)."""
    sold = sales > 0
    index = np.where(sold, np.arange(sales.shape[1])[None, :], -1)
    last_sold = np.maximum.accumulate(index, axis=1)[series, origin]
    since = np.where(last_sold >= 0, origin - last_sold, cap)
    return np.minimum(since, cap).astype(float)


def seasonal_naive(panel: Panel, series: IntArray, origin: IntArray, horizon: IntArray) -> FloatArray:
    """Baseline: the last observed value of the target's seasonal phase."""
    offset = same_phase_offset(horizon, panel.freq.season)
    values: FloatArray = np.nan_to_num(panel.sales[series, origin + offset], nan=0.0)
    return values


def moving_average(
    panel: Panel, series: IntArray, origin: IntArray, spec: FeatureSpec | None = None
) -> FloatArray:
    """Baseline: the mean of the last `moving_average_window` periods, flat over the horizon."""
    spec = spec or spec_for(panel.freq)
    cum = _prefix(np.nan_to_num(panel.sales, nan=0.0))
    return _window_sum(cum, series, origin, spec.moving_average_window) / spec.moving_average_window

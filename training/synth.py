"""Synthetic retail sales in the DESIGN long schema, for tests, demos and benchmarks.

The generator builds one expected-demand matrix (series × periods) as a product of independent,
realistic effects, then draws integer sales around it from a negative binomial (gamma-Poisson)
distribution. Every effect draws from its own seeded random stream, so the output is a pure function
of the arguments, and changing one effect does not reshuffle the others.

Series are (store, item) pairs, stored store-major: series `s` is store `s // items`, item `s % items`.
Weekly periods are labelled by the first day of the week they cover.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from retail_forecast.core.schema import DATE, EVENT, ITEM, PRICE, PROMO, SALES, STORE, Freq

__all__ = ["COLUMNS", "DEFAULT_PERIODS", "synthesize", "synthesize_to"]

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]

COLUMNS: Final = (DATE, STORE, ITEM, SALES, PRICE, PROMO, EVENT)
DEFAULT_PERIODS: Final = {Freq.DAILY: 730, Freq.WEEKLY: 156}

_DAYS_PER_YEAR: Final = 365.25
_INTERMITTENT_SHARE: Final = 0.2  # items whose mean is below one unit per period
_LATE_START_SHARE: Final = 0.08  # items introduced part-way through the range
_EARLY_END_SHARE: Final = 0.06  # items discontinued before the end of the range
# Monday..Sunday shopping pattern shared by all stores before store/item variation: weekends are busier.
_BASE_DOW: Final = (0.88, 0.85, 0.88, 0.93, 1.08, 1.32, 1.18)


@dataclass(frozen=True)
class _Grid:
    """The shape of the data set: which store and item each series is, and the period dates."""

    freq: Freq
    dates: pd.DatetimeIndex
    stores: int
    items: int

    @property
    def n_series(self) -> int:
        return self.stores * self.items

    @property
    def n_periods(self) -> int:
        return len(self.dates)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_series, self.n_periods)

    @property
    def store_of(self) -> Ints:
        return np.repeat(np.arange(self.stores, dtype=np.int64), self.items)

    @property
    def item_of(self) -> Ints:
        return np.tile(np.arange(self.items, dtype=np.int64), self.stores)

    @property
    def years(self) -> Floats:
        """Time since the first period in years, per period."""
        days = (self.dates - self.dates[0]).days.to_numpy(dtype=np.float64)
        return days / _DAYS_PER_YEAR

    def per_year(self, rate: float) -> float:
        """Probability per period of something that happens `rate` times a year."""
        return min(1.0, rate * self.freq.days / _DAYS_PER_YEAR)


def synthesize(
    *,
    stores: int = 10,
    items: int = 50,
    periods: int | None = None,
    freq: Freq = Freq.DAILY,
    start: str = "2022-01-03",
    seed: int = 0,
) -> pd.DataFrame:
    """Generate `stores × items` series of realistic sales, deterministic in all arguments.

    Columns are DESIGN's long schema (`date, store_id, item_id, sales, price, promo, event`), sorted by
    store_id, item_id, date. Rows before a late-launched item's start and after a discontinued item's
    end are omitted. `periods` defaults to 730 days or 156 weeks.
    """
    freq = Freq(freq)
    if stores < 1 or items < 1:
        raise ValueError(f"stores and items must be >= 1, got stores={stores}, items={items}")
    n_periods = DEFAULT_PERIODS[freq] if periods is None else periods
    if n_periods < 1:
        raise ValueError(f"periods must be >= 1, got {n_periods}")
    first = pd.Timestamp(start).normalize()
    dates = pd.date_range(first, periods=n_periods, freq=f"{freq.days}D")
    grid = _Grid(freq=freq, dates=dates, stores=stores, items=items)

    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(10)]
    level, intermittent = _levels(streams[0], grid)
    price, reference = _prices(streams[1], grid)
    promo, promo_effect = _promotions(streams[2], grid)
    event_names, event_effect = _events(streams[3], grid)
    demand = (
        level[:, None]
        * _weekday_profile(streams[4], grid)
        * _yearly_season(streams[5], grid)
        * _trend(streams[6], grid)
        * _price_response(streams[7], grid, price, reference)
        * promo_effect
        * event_effect
    )
    sales = _draw_counts(streams[8], demand, intermittent[grid.item_of])
    active = _lifecycle(streams[9], grid)
    return _to_frame(grid, active=active, sales=sales, price=price, promo=promo, event_names=event_names)


def synthesize_to(path: Path, **kwargs: Any) -> pd.DataFrame:
    """Write `synthesize(**kwargs)` to `path` (.csv with ISO dates, or .parquet) and return the frame."""
    path = Path(path)
    suffix = path.suffix.lower()
    writers: dict[str, Callable[[pd.DataFrame], object]] = {
        ".csv": lambda f: f.to_csv(path, index=False, date_format="%Y-%m-%d"),
        ".parquet": lambda f: f.to_parquet(path, index=False),
    }
    if suffix not in writers:
        raise ValueError(f"{path}: unsupported suffix {path.suffix!r}; use .csv or .parquet")
    frame = synthesize(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    writers[suffix](frame)
    return frame


# --- demand effects -----------------------------------------------------------------------------------


def _levels(rng: np.random.Generator, grid: _Grid) -> tuple[Floats, Bools]:
    """Per-series mean level: log-normal item volume × store size × series noise; ~20 % intermittent items."""
    item_daily = 1.0 + np.exp(rng.normal(math.log(4.0), 1.0, grid.items))  # a long tail of big sellers
    item_level = item_daily * grid.freq.days
    intermittent = np.zeros(grid.items, dtype=np.bool_)
    n_slow = round(_INTERMITTENT_SHARE * grid.items)
    intermittent[rng.choice(grid.items, size=n_slow, replace=False)] = True
    # Slow movers sell well under one unit per period whatever the frequency (spare parts, niche items).
    item_level = np.where(intermittent, rng.uniform(0.05, 0.5, grid.items), item_level)
    store_size = np.exp(rng.normal(0.0, 0.3, grid.stores))
    noise = np.exp(rng.normal(0.0, 0.2, grid.n_series))
    return item_level[grid.item_of] * store_size[grid.store_of] * noise, intermittent


def _weekday_profile(rng: np.random.Generator, grid: _Grid) -> Floats:
    """Day-of-week pattern for daily data: a busy weekend, varied per store and in strength per item."""
    if grid.freq is Freq.WEEKLY:
        return np.ones(grid.shape)
    store_log = np.log(np.asarray(_BASE_DOW))[None, :] + rng.normal(0.0, 0.04, (grid.stores, 7))
    strength = rng.uniform(0.4, 1.6, grid.items)
    log_profile = store_log[grid.store_of] * strength[grid.item_of][:, None]
    profile = np.exp(log_profile)
    profile /= profile.mean(axis=1, keepdims=True)  # shape only: the level carries the volume
    weekday = grid.dates.day_of_week.to_numpy()
    result: Floats = profile[:, weekday]
    return result


def _yearly_season(rng: np.random.Generator, grid: _Grid) -> Floats:
    """Smooth annual curve peaking in December, plus a pre-Christmas bump; amplitude varies per item."""
    mid = grid.dates + pd.Timedelta(days=(grid.freq.days - 1) / 2)  # a week is seen at its middle
    doy = mid.day_of_year.to_numpy(dtype=np.float64)
    annual = np.cos(2 * np.pi * (doy - 350.0) / _DAYS_PER_YEAR)
    gap = np.abs(doy - 354.0)
    gap = np.minimum(gap, _DAYS_PER_YEAR - gap)
    bump = np.exp(-0.5 * (gap / 10.0) ** 2)
    amplitude = rng.uniform(0.02, 0.35, grid.items)
    christmas = rng.uniform(0.0, 0.6, grid.items)
    log_season = amplitude[:, None] * annual[None, :] + christmas[:, None] * bump[None, :]
    result: Floats = np.exp(log_season)[grid.item_of]
    return result


def _trend(rng: np.random.Generator, grid: _Grid) -> Floats:
    """Slow exponential growth or decline per series (a few percent to ~30 % a year)."""
    slope = rng.normal(0.0, 0.12, grid.n_series)
    result: Floats = np.exp(slope[:, None] * grid.years[None, :])
    return result


def _prices(rng: np.random.Generator, grid: _Grid) -> tuple[Floats, Floats]:
    """Shelf prices: item base × store index, permanent step changes, and temporary markdowns.

    Returns the price per series and period and each series' reference (launch) price.
    """
    item_base = np.clip(np.exp(rng.normal(math.log(4.0), 0.8, grid.items)), 0.5, 80.0)
    store_index = np.exp(rng.normal(0.0, 0.03, grid.stores))
    raw = item_base[grid.item_of] * store_index[grid.store_of]
    reference = np.maximum(np.floor(raw * 10.0) / 10.0 - 0.01, 0.09)  # charm pricing: 3.39, 12.99

    # Permanent changes (cost or inflation driven, mostly up) about once every 18 months per series.
    steps = rng.random(grid.shape) < grid.per_year(0.7)
    step_log = rng.normal(0.04, 0.07, grid.shape)
    regular = reference[:, None] * np.exp(np.cumsum(np.where(steps, step_log, 0.0), axis=1))

    # Temporary markdowns of 10-40 % for one to three weeks, about twice a year per series.
    min_len, max_len = (7, 21) if grid.freq is Freq.DAILY else (1, 3)
    start_prob = np.full(grid.n_series, grid.per_year(2.0))
    marked, depth = _runs(rng, grid.shape, start_prob, min_len, max_len)
    discount = np.where(marked, 0.1 + 0.3 * depth, 0.0)
    price = np.maximum(np.round(regular * (1.0 - discount), 2), 0.01)
    return price, reference


def _price_response(rng: np.random.Generator, grid: _Grid, price: Floats, reference: Floats) -> Floats:
    """Demand ∝ (price / reference price) ** elasticity, with a per-item elasticity in [-2.5, -0.5]."""
    elasticity = rng.uniform(-2.5, -0.5, grid.items)[grid.item_of]
    result: Floats = (price / reference[:, None]) ** elasticity[:, None]
    return result


def _promotions(rng: np.random.Generator, grid: _Grid) -> tuple[Ints, Floats]:
    """Chain-wide item promotions (5-10 % of periods, in runs) with an uplift and a post-promo dip."""
    min_len, max_len = (3, 14) if grid.freq is Freq.DAILY else (1, 3)
    coverage = rng.uniform(0.05, 0.10, grid.items)
    start_prob = coverage / ((min_len + max_len) / 2)
    on_item, _ = _runs(rng, (grid.items, grid.n_periods), start_prob, min_len, max_len)
    on = on_item[grid.item_of]
    uplift = rng.uniform(1.2, 2.5, grid.items)[grid.item_of]

    # Customers stocked up during the promotion: demand dips for a short while after it ends.
    dip_len = 3 if grid.freq is Freq.DAILY else 1
    ended = np.zeros_like(on)
    ended[:, 1:] = on[:, :-1] & ~on[:, 1:]
    after = np.zeros_like(on)
    for lag in range(dip_len):
        after[:, lag:] |= ended[:, : grid.n_periods - lag]
    after &= ~on
    effect = np.where(on, uplift[:, None], np.where(after, 0.85, 1.0))
    return on.astype(np.int64), effect


@dataclass(frozen=True)
class _Event:
    """One named calendar event: a day, its typical demand multiplier (0 = stores closed), its span."""

    name: str
    day: date
    multiplier: float
    span: int = 1


def _easter(year: int) -> date:
    """Western Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    el = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * el) // 451
    month, day = divmod(h + el - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th given weekday (Monday = 0) of a month."""
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _calendar(year: int) -> list[_Event]:
    """The fixed retail event calendar of one year."""
    thanksgiving = _nth_weekday(year, 11, 3, 4)
    return [
        _Event("new_year", date(year, 1, 1), 0.55),
        _Event("valentines_day", date(year, 2, 14), 1.15),
        _Event("easter", _easter(year), 1.25),
        _Event("back_to_school", date(year, 8, 15), 1.2, span=7),
        _Event("halloween", date(year, 10, 31), 1.2),
        _Event("thanksgiving", thanksgiving, 0.7),
        _Event("black_friday", thanksgiving + timedelta(days=1), 1.9),
        _Event("christmas_eve", date(year, 12, 24), 1.4),
        _Event("christmas", date(year, 12, 25), 0.0),
        _Event("new_years_eve", date(year, 12, 31), 1.25),
    ]


def _events(rng: np.random.Generator, grid: _Grid) -> tuple[npt.NDArray[np.object_], Floats]:
    """Calendar events: a name per period and a per-item multiplier (a week averages its days).

    Christmas day is a closure (zero sales); other events lift or lower demand, more for some items.
    """
    step = grid.freq.days
    first = grid.dates[0].date()
    n_days = grid.n_periods * step
    log_uplift = np.zeros(n_days)
    closed = np.zeros(n_days, dtype=np.bool_)
    names: list[list[str]] = [[] for _ in range(grid.n_periods)]
    last = first + timedelta(days=n_days - 1)
    for year in range(first.year, last.year + 1):
        for event in _calendar(year):
            offset = (event.day - first).days
            days = np.arange(max(offset, 0), min(offset + event.span, n_days))
            if days.size == 0:
                continue
            if event.multiplier == 0.0:
                closed[days] = True
            else:
                log_uplift[days] += math.log(event.multiplier)
            for period in np.unique(days // step):
                names[period].append(event.name)

    sensitivity = rng.uniform(0.3, 1.7, grid.items)
    daily = np.exp(sensitivity[:, None] * log_uplift[None, :]) * ~closed[None, :]
    per_period = daily.reshape(grid.items, grid.n_periods, step).mean(axis=2)
    labels = np.array(["|".join(n) for n in names], dtype=object)
    return labels, per_period[grid.item_of]


# --- sampling and assembly ----------------------------------------------------------------------------


def _runs(
    rng: np.random.Generator, shape: tuple[int, int], start_prob: Floats, min_len: int, max_len: int
) -> tuple[Bools, Floats]:
    """Random on-runs per row (a start with `start_prob` per period, `min_len..max_len` long).

    Returns the covered cells and a uniform [0, 1) draw per run spread over its cells (overlapping runs
    average theirs), so callers can give each run its own depth or size.
    """
    rows_n, cols_n = shape
    starts = rng.random(shape) < start_prob[:, None]
    lengths = rng.integers(min_len, max_len + 1, size=shape)
    draws = rng.random(shape)
    rows, cols = np.nonzero(starts)
    ends = np.minimum(cols + lengths[rows, cols], cols_n)
    count = np.zeros((rows_n, cols_n + 1), dtype=np.int64)
    total = np.zeros((rows_n, cols_n + 1))
    np.add.at(count, (rows, cols), 1)
    np.add.at(count, (rows, ends), -1)
    np.add.at(total, (rows, cols), draws[rows, cols])
    np.add.at(total, (rows, ends), -draws[rows, cols])
    running = np.cumsum(count[:, :cols_n], axis=1)
    covered = running > 0
    value = np.where(covered, np.cumsum(total[:, :cols_n], axis=1) / np.maximum(running, 1), 0.0)
    return covered, np.clip(value, 0.0, 1.0)


def _draw_counts(rng: np.random.Generator, demand: Floats, intermittent: Bools) -> Floats:
    """Integer sales around the expected demand: negative binomial (gamma-Poisson), lumpier for slow items."""
    n_series = demand.shape[0]
    shape = np.where(intermittent, rng.uniform(0.5, 2.0, n_series), rng.uniform(3.0, 30.0, n_series))
    mixing = rng.gamma(shape[:, None], 1.0 / shape[:, None], demand.shape)
    return rng.poisson(demand * mixing).astype(np.float64)


def _lifecycle(rng: np.random.Generator, grid: _Grid) -> Bools:
    """Which periods each series exists: a few items launch late, a few are discontinued early."""
    n = grid.n_periods
    first = np.zeros(grid.items, dtype=np.int64)
    end = np.full(grid.items, n, dtype=np.int64)
    order = rng.permutation(grid.items)
    n_late = round(_LATE_START_SHARE * grid.items)
    n_gone = min(round(_EARLY_END_SHARE * grid.items), grid.items - n_late)
    late, gone = order[:n_late], order[n_late : n_late + n_gone]
    if n >= 6:
        first[late] = rng.integers(n // 6, 2 * n // 3, size=n_late)
        end[gone] = rng.integers(n // 3, 5 * n // 6, size=n_gone)
    # Stores roll an item in (or out) over a few periods rather than all on the same day.
    # The lag (at most n // 60 + 1) keeps every series at least a few periods long.
    lag = rng.integers(0, max(1, n // 60) + 1, size=grid.n_series)
    item_first, item_end = first[grid.item_of], end[grid.item_of]
    series_first = np.where(item_first > 0, item_first + lag, 0)
    series_end = np.where(item_end < n, item_end - lag, n)
    period = np.arange(n)[None, :]
    active: Bools = (period >= series_first[:, None]) & (period < series_end[:, None])
    return active


def _to_frame(
    grid: _Grid,
    *,
    active: Bools,
    sales: Floats,
    price: Floats,
    promo: Ints,
    event_names: npt.NDArray[np.object_],
) -> pd.DataFrame:
    """Flatten the series × period matrices to the long schema, keeping only active periods."""
    keep = active.ravel()
    width_s, width_i = max(2, len(str(grid.stores))), max(3, len(str(grid.items)))
    store_labels = np.array([f"store_{s + 1:0{width_s}d}" for s in range(grid.stores)], dtype=object)
    item_labels = np.array([f"item_{i + 1:0{width_i}d}" for i in range(grid.items)], dtype=object)
    n = grid.n_periods
    frame = pd.DataFrame(
        {
            DATE: np.tile(grid.dates.to_numpy(), grid.n_series)[keep],
            STORE: np.repeat(store_labels[grid.store_of], n)[keep],
            ITEM: np.repeat(item_labels[grid.item_of], n)[keep],
            SALES: sales.ravel()[keep],
            PRICE: price.ravel()[keep],
            PROMO: promo.ravel()[keep],
            EVENT: np.tile(event_names, grid.n_series)[keep],
        }
    )
    # Zero-padded labels and store-major construction already give the (store, item, date) order.
    return frame

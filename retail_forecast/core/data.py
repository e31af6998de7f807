"""Loading and validating sales data in the DESIGN long schema, and turning it into a regular panel.

Validation names the file, the row and the column of the first problem of each kind. Irregularities that
are not errors (negative sales, closed days, series that start late or end early) are handled by one
explicit policy and counted in a `DataReport`, never silently:

- negative sales are returns: clipped to 0 and counted;
- a period missing *inside* a series' own span (first to last observed period) is a closed day: its sales
  are 0, its price is carried forward, promo 0, no event; counted per series;
- a series is never extended before its first or after its last observation: those periods stay
  missing (NaN) and no feature or metric reads them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from retail_forecast.core.schema import (
    DATE,
    EVENT,
    ITEM,
    OPTIONAL_COLUMNS,
    PRICE,
    PROMO,
    REQUIRED_COLUMNS,
    SALES,
    SERIES_KEY,
    STORE,
    DataError,
    Freq,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Panel:
    """Series × periods arrays on one regular calendar; NaN sales mark periods outside a series' span."""

    freq: Freq
    dates: pd.DatetimeIndex
    store_ids: npt.NDArray[np.str_]
    item_ids: npt.NDArray[np.str_]
    sales: FloatArray
    price: FloatArray
    promo: FloatArray
    event: BoolArray

    @property
    def n_series(self) -> int:
        return int(self.sales.shape[0])

    @property
    def n_periods(self) -> int:
        return int(self.sales.shape[1])

    def select_series(self, which: slice | npt.NDArray[np.intp]) -> Panel:
        """The panel restricted to some series, on the same calendar (a slice gives views, no copies)."""
        return replace(
            self,
            store_ids=self.store_ids[which],
            item_ids=self.item_ids[which],
            sales=self.sales[which],
            price=self.price[which],
            promo=self.promo[which],
            event=self.event[which],
        )

    def fingerprint(self) -> str:
        """A digest of exactly what training saw, so a manifest names its data without shipping it."""
        digest = hashlib.sha256()
        digest.update(self.freq.value.encode())
        digest.update(self.dates.asi8.tobytes())
        for ids in (self.store_ids, self.item_ids):
            digest.update("\x1f".join(ids.tolist()).encode())
        for array in (self.sales, self.price, self.promo, self.event):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


@dataclass
class DataReport:
    """What the gap policy did to the data; printed by training and stored in the report."""

    rows: int = 0
    series: int = 0
    negative_sales_clipped: int = 0
    closed_periods_filled: int = 0
    series_with_closed_periods: int = 0
    series_starting_late: int = 0
    series_ending_early: int = 0
    missing_prices_filled: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"rows: {self.rows}",
            f"series: {self.series}",
            f"negative sales clipped to 0: {self.negative_sales_clipped}",
            f"closed periods filled with 0 sales: {self.closed_periods_filled} "
            f"(in {self.series_with_closed_periods} series)",
            f"series starting after the first period: {self.series_starting_late}",
            f"series ending before the last period: {self.series_ending_early}",
            f"missing prices filled from neighbouring periods: {self.missing_prices_filled}",
            *self.notes,
        ]


def _row_label(source: str, index: int, *, csv: bool) -> str:
    # CSV rows are reported as file line numbers (header is line 1); other formats by 1-based row.
    return f"{source}: line {index + 2}" if csv else f"{source}: row {index + 1}"


def read_sales(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file in the DESIGN long schema and validate it (see `validate_sales`)."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable CSV file ({exc})") from None
        return validate_sales(frame, source=str(path), csv=True)
    if suffix in {".parquet", ".pq"}:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        return validate_sales(frame, source=str(path), csv=False)
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")


def validate_sales(
    frame: pd.DataFrame, *, source: str = "<data>", csv: bool = False, first_row: int = 0
) -> pd.DataFrame:
    """Check the schema and return a clean frame with canonical dtypes, sorted by series and date.

    Raises `DataError` naming the source, row and column of the first bad value; `first_row` is the
    frame's offset in its file when the file is read in parts.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns)) or 'none'}"
        )
    if frame.empty:
        raise DataError(f"{source}: no data rows")
    frame = frame.reset_index(drop=True)
    out = pd.DataFrame(index=frame.index)

    def fail(column: str, bad: pd.Series, why: str) -> None:
        first = int(np.flatnonzero(bad.to_numpy())[0])
        value = frame.at[first, column]
        raise DataError(
            f"{_row_label(source, first_row + first, csv=csv)}, column {column!r}: {why} (got {value!r}); "
            f"{int(bad.sum())} row(s) affected"
        )

    raw_dates = frame[DATE]
    dates = pd.to_datetime(raw_dates, errors="coerce", format="ISO8601")
    if getattr(dates.dt, "tz", None) is not None:
        fail(DATE, pd.Series(True, index=frame.index), "dates must not carry a time zone")
    bad_dates = dates.isna()
    if bad_dates.any():
        fail(DATE, bad_dates, "not an ISO date (YYYY-MM-DD)")
    if (dates != dates.dt.normalize()).any():
        fail(DATE, dates != dates.dt.normalize(), "dates must not carry a time of day")
    out[DATE] = dates.astype("datetime64[ns]")

    for column in SERIES_KEY:
        values = frame[column]
        empty = values.isna() | (values.astype(str).str.strip() == "")
        if empty.any():
            fail(column, empty, "series key must not be empty")
        out[column] = values.astype(str).str.strip()

    sales = pd.to_numeric(frame[SALES], errors="coerce")
    bad_sales = sales.isna() | ~np.isfinite(sales.to_numpy(dtype=float, na_value=np.nan))
    if bad_sales.any():
        fail(SALES, bad_sales, "sales must be a finite number")
    out[SALES] = sales.astype(float)

    if PRICE in frame.columns:
        raw = frame[PRICE]
        price = pd.to_numeric(raw, errors="coerce")
        unparsable = raw.notna() & price.isna()
        if unparsable.any():
            fail(PRICE, unparsable, "price must be a number")
        non_positive = price.notna() & ~(price > 0)
        if non_positive.any():
            fail(PRICE, non_positive, "price must be > 0")
        out[PRICE] = price.astype(float)
    else:
        out[PRICE] = np.nan

    if PROMO in frame.columns:
        raw = frame[PROMO]
        promo = pd.to_numeric(raw, errors="coerce")
        bad_promo = (raw.notna() & promo.isna()) | (promo.notna() & ~promo.isin([0, 1]))
        if bad_promo.any():
            fail(PROMO, bad_promo, "promo must be 0 or 1")
        out[PROMO] = promo.fillna(0).astype(float)
    else:
        out[PROMO] = 0.0

    if EVENT in frame.columns:
        out[EVENT] = frame[EVENT].fillna("").astype(str).str.strip()
    else:
        out[EVENT] = ""

    duplicated = out.duplicated(subset=[DATE, *SERIES_KEY], keep=False)
    if duplicated.any():
        rows = np.flatnonzero(duplicated.to_numpy())
        first = out.loc[rows[0], [DATE, *SERIES_KEY]]
        twin = next(
            int(r)
            for r in rows[1:]
            if (out.loc[r, [DATE, *SERIES_KEY]] == first).all()  # the row it duplicates
        )
        unit = "lines" if csv else "rows"
        base = first_row + (2 if csv else 1)
        first_n, twin_n = int(rows[0]) + base, twin + base
        raise DataError(
            f"{source}: {unit} {first_n} and {twin_n}: duplicate (date, store_id, item_id) = "
            f"({first[DATE].date()}, {first[STORE]}, {first[ITEM]}); "
            f"{int(duplicated.sum())} rows are duplicates"
        )
    # Sorted by the keys' integer codes (in the strings' order), with one copy of the rows: pandas' sort
    # on the string columns plus the copies selecting and renumbering them took loading 30,000 daily
    # series (20 million rows) to a peak of 8.95 GB, this to 7.74 GB. `out` has the schema's column order.
    assert list(out.columns) == [DATE, STORE, ITEM, SALES, *OPTIONAL_COLUMNS]
    stores, items = (pd.factorize(out[key], sort=True)[0] for key in SERIES_KEY)
    ordered = out.take(np.lexsort((out[DATE].to_numpy(), items, stores)))
    ordered.index = pd.RangeIndex(len(ordered))
    return ordered


def infer_freq(dates: pd.Series, *, source: str = "<data>") -> Freq:
    """Daily or weekly, from the spacing of the distinct dates; anything else is an error."""
    unique = np.sort(dates.unique())
    if len(unique) < 2:
        raise DataError(f"{source}: need at least two distinct dates to infer the frequency")
    steps = np.diff(unique).astype("timedelta64[D]").astype(int)
    if steps.min() == 1:
        return Freq.DAILY
    if np.all(steps % 7 == 0):
        return Freq.WEEKLY
    raise DataError(
        f"{source}: dates are neither daily nor weekly (smallest step {steps.min()} days); "
        "pass --freq or resample the data"
    )


def check_freq(dates: pd.Series, freq: Freq, *, source: str = "<data>") -> None:
    """Refuse dates that do not sit on the frequency's grid (weekly: one weekday)."""
    if freq is Freq.WEEKLY:
        weekdays = dates.dt.day_of_week
        common = int(weekdays.mode().iloc[0])
        off = weekdays != common
        if off.any():
            first = int(np.flatnonzero(off.to_numpy())[0])
            raise DataError(
                f"{source}: row {first + 1} of the sorted data, column 'date': weekly data must fall on one "
                f"weekday; {dates.iloc[first].date()} is not a {pd.Timestamp(2024, 1, 1 + common).day_name()}"
            )
    else:
        inferred = infer_freq(dates, source=source) if dates.nunique() > 1 else Freq.DAILY
        if inferred is not Freq.DAILY:
            raise DataError(f"{source}: --freq D was given but the dates are weekly")


def build_panel(
    frame: pd.DataFrame, freq: Freq | None = None, *, source: str = "<data>"
) -> tuple[Panel, DataReport]:
    """Apply the gap policy (module docstring) to a validated frame and lay it on a regular calendar."""
    report = DataReport(rows=len(frame))
    freq = freq or infer_freq(frame[DATE], source=source)
    check_freq(frame[DATE], freq, source=source)

    step = np.timedelta64(freq.days, "D")
    start = frame[DATE].min().to_datetime64()
    offsets = (frame[DATE].to_numpy() - start) // step
    dates = pd.date_range(start, frame[DATE].max(), freq=f"{freq.days}D")

    keys = frame[[STORE, ITEM]].drop_duplicates().reset_index(drop=True)
    series_index = (
        frame[[STORE, ITEM]].merge(keys.reset_index(), on=[STORE, ITEM], how="left")["index"].to_numpy()
    )
    n_series, n_periods = len(keys), len(dates)
    report.series = n_series

    sales = np.full((n_series, n_periods), np.nan)
    price = np.full((n_series, n_periods), np.nan)
    promo = np.zeros((n_series, n_periods))
    event = np.zeros((n_series, n_periods), dtype=bool)
    observed = np.zeros((n_series, n_periods), dtype=bool)

    raw_sales = frame[SALES].to_numpy(dtype=float)
    report.negative_sales_clipped = int((raw_sales < 0).sum())
    sales[series_index, offsets] = np.maximum(raw_sales, 0.0)
    price[series_index, offsets] = frame[PRICE].to_numpy(dtype=float)
    promo[series_index, offsets] = frame[PROMO].to_numpy(dtype=float)
    event[series_index, offsets] = frame[EVENT].to_numpy(dtype=str) != ""
    observed[series_index, offsets] = True

    first = observed.argmax(axis=1)
    last = n_periods - 1 - observed[:, ::-1].argmax(axis=1)
    periods = np.arange(n_periods)
    in_span = (periods >= first[:, None]) & (periods <= last[:, None])
    closed = in_span & ~observed
    sales[closed] = 0.0
    report.closed_periods_filled = int(closed.sum())
    report.series_with_closed_periods = int(closed.any(axis=1).sum())
    report.series_starting_late = int((first > 0).sum())
    report.series_ending_early = int((last < n_periods - 1).sum())

    has_price = ~np.isnan(price)
    needs_price = in_span & ~has_price & has_price.any(axis=1)[:, None]
    report.missing_prices_filled = int(needs_price.sum())
    price = _fill_within_span(price, in_span)
    if not has_price.any():
        report.notes.append("no prices in the data: price features are neutral")

    panel = Panel(
        freq=freq,
        dates=pd.DatetimeIndex(dates),
        store_ids=keys[STORE].to_numpy(dtype=str),
        item_ids=keys[ITEM].to_numpy(dtype=str),
        sales=sales,
        price=price,
        promo=promo,
        event=event,
    )
    return panel, report


def _fill_within_span(values: FloatArray, in_span: BoolArray) -> FloatArray:
    """Forward- then back-fill NaNs along periods, only inside each series' span."""
    frame = pd.DataFrame(values.T)
    filled = frame.ffill().bfill().to_numpy().T
    return np.where(in_span, filled, np.nan)


def load_panel(path: Path, freq: Freq | None = None) -> tuple[Panel, DataReport]:
    frame = read_sales(path)
    return build_panel(frame, freq, source=str(path))


def extend_for_forecast(
    panel: Panel, horizon: int, future: pd.DataFrame | None = None
) -> tuple[Panel, npt.NDArray[np.int64]]:
    """Add `horizon` periods after each series' last sale, with the covariates known for them.

    Returns the extended panel and each series' forecast origin (its last observed period). Future
    covariates are taken from `future` (validated frame without sales) where given; otherwise price
    carries the last known price forward, promo is 0 and there is no event: the same assumptions
    training makes for a closed day.
    """
    observed = ~np.isnan(panel.sales)
    origins = (panel.n_periods - 1 - observed[:, ::-1].argmax(axis=1)).astype(np.int64)
    n_periods = int(origins.max()) + horizon + 1
    extra = n_periods - panel.n_periods
    dates = pd.date_range(panel.dates[0], periods=n_periods, freq=f"{panel.freq.days}D")

    def grow(values: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
        return np.concatenate([values, np.full((panel.n_series, extra), fill, dtype=values.dtype)], axis=1)

    sales = grow(panel.sales, np.nan)
    price, promo, event = grow(panel.price, np.nan), grow(panel.promo, 0.0), grow(panel.event, False)
    periods = np.arange(n_periods)
    ahead = (periods > origins[:, None]) & (periods <= origins[:, None] + horizon)
    price[ahead] = np.nan
    promo[ahead] = 0.0
    event[ahead] = False
    if future is not None and len(future):
        keys = pd.MultiIndex.from_arrays([panel.store_ids, panel.item_ids])
        rows = keys.get_indexer(pd.MultiIndex.from_frame(future[[STORE, ITEM]]))
        offsets = (future[DATE].to_numpy() - panel.dates[0].to_datetime64()) // np.timedelta64(
            panel.freq.days, "D"
        )
        price[rows, offsets] = future[PRICE].to_numpy(dtype=float)
        promo[rows, offsets] = future[PROMO].to_numpy(dtype=float)
        event[rows, offsets] = future[EVENT].to_numpy(dtype=str) != ""
    last_price = panel.price[np.arange(panel.n_series), origins]
    span = periods <= origins[:, None] + horizon
    price = np.where(ahead & np.isnan(price), last_price[:, None], price)
    price = np.where(span, price, np.nan)
    extended = Panel(
        freq=panel.freq,
        dates=pd.DatetimeIndex(dates),
        store_ids=panel.store_ids,
        item_ids=panel.item_ids,
        sales=sales,
        price=price,
        promo=promo,
        event=event,
    )
    return extended, origins

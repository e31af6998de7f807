"""Convert the M5 competition layout to the DESIGN long sales schema.

M5 ships three files: a wide sales table (`sales_train_evaluation.csv` or `sales_train_validation.csv`,
one row per store-item and one `d_<n>` column per day), `calendar.csv` (maps `d_<n>` to a date, its
Walmart week `wm_yr_wk` and the day's events) and `sell_prices.csv` (weekly shelf price per store-item).

Conversion: the day columns become rows dated via the calendar; the price is the store-item's price of
that Walmart week; days before an item's first price are dropped (M5 records zeros before an item is
launched, and those are not real zero demand); a gap in prices after launch carries the last price
forward; `promo` is 0 (M5 has none; SNAP days are not promotions, fall on fixed days of the month per
state, which the day-of-month feature carries, and did not help as `promo`: README); `event` is
`event_name_1`, joined with `event_name_2` by "|" when a day has two, "" when none. Sales are passed
through unchanged (the schema validator, not the loader, clips and counts returns).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from retail_forecast.core.schema import DATE, EVENT, ITEM, PRICE, PROMO, SALES, STORE, DataError

__all__ = ["CALENDAR_FILE", "PRICES_FILE", "SALES_FILES", "load_m5"]

# The evaluation file extends the validation file by the 28 days that were hidden; prefer it.
SALES_FILES: Final = ("sales_train_evaluation.csv", "sales_train_validation.csv")
CALENDAR_FILE: Final = "calendar.csv"
PRICES_FILE: Final = "sell_prices.csv"

_DAY_PREFIX: Final = "d_"
_SALES_COLUMNS: Final = ("store_id", "item_id")
_CALENDAR_COLUMNS: Final = ("date", "wm_yr_wk", "d", "event_name_1")
_PRICE_COLUMNS: Final = ("store_id", "item_id", "wm_yr_wk", "sell_price")


def load_m5(
    directory: Path, *, stores: list[str] | None = None, max_series: int | None = None
) -> pd.DataFrame:
    """Load an M5 directory as a long-schema frame sorted by store_id, item_id, date.

    `stores` keeps only those stores (each must exist). `max_series` keeps the first N series in
    (store_id, item_id) order, after the store filter. Raises `DataError` naming the file and the
    missing columns when a file or a required column is missing.
    """
    directory = Path(directory)
    if max_series is not None and max_series < 1:
        raise ValueError(f"max_series must be >= 1, got {max_series}")
    sales_path = _sales_file(directory)
    calendar_path = _require_file(directory / CALENDAR_FILE)
    prices_path = _require_file(directory / PRICES_FILE)

    wide = _read_sales(sales_path, stores, max_series)
    day_columns = [c for c in wide.columns if c.startswith(_DAY_PREFIX)]
    calendar = _read_calendar(calendar_path, day_columns, sales_path)
    prices = _read_prices(prices_path)
    return _to_long(wide, calendar, prices)


def _sales_file(directory: Path) -> Path:
    """The first M5 sales file present (evaluation before validation)."""
    if not directory.is_dir():
        raise DataError(f"{directory}: M5 directory does not exist")
    for name in SALES_FILES:
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory}: no M5 sales file; expected one of {', '.join(SALES_FILES)}")


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: required M5 file is missing")
    return path


def _header(path: Path, required: Sequence[str]) -> list[str]:
    """The file's column names, after checking that the required ones are present."""
    try:
        columns = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read CSV header: {exc}") from exc
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return columns


def _read_sales(path: Path, stores: list[str] | None, max_series: int | None) -> pd.DataFrame:
    """The wide sales table, filtered to the requested series, sorted by (store_id, item_id)."""
    columns = _header(path, _SALES_COLUMNS)
    day_columns = [c for c in columns if c.startswith(_DAY_PREFIX)]
    if not day_columns:
        raise DataError(f"{path}: missing column(s) d_1..d_N (no day columns)")
    dtypes: dict[str, str] = {"store_id": "str", "item_id": "str"}
    wide = pd.read_csv(path, usecols=[*_SALES_COLUMNS, *day_columns], dtype=dtypes)
    not_numeric = [c for c in day_columns if not pd.api.types.is_numeric_dtype(wide[c])]
    if not_numeric:
        raise DataError(f"{path}: column(s) {', '.join(not_numeric[:5])} must hold numeric sales")
    if stores is not None:
        unknown = sorted(set(stores) - set(wide["store_id"]))
        if unknown:
            raise DataError(f"{path}: column store_id has no store(s) {', '.join(unknown)}")
        wide = wide[wide["store_id"].isin(stores)]
    duplicated = wide.duplicated(list(_SALES_COLUMNS))
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0]) + 2  # 1-based, after the header line
        raise DataError(f"{path}: row {row}: duplicate series (store_id, item_id)")
    wide = wide.sort_values(list(_SALES_COLUMNS), kind="stable")
    if max_series is not None:
        wide = wide.head(max_series)
    return wide.reset_index(drop=True)


def _read_calendar(path: Path, day_columns: list[str], sales_path: Path) -> pd.DataFrame:
    """Calendar rows for the sales file's day columns, in chronological order, with joined event names."""
    columns = _header(path, _CALENDAR_COLUMNS)
    wanted = [*_CALENDAR_COLUMNS, *(["event_name_2"] if "event_name_2" in columns else [])]
    calendar = pd.read_csv(path, usecols=wanted, dtype={"d": "str", "event_name_1": "str"})
    if calendar["d"].duplicated().any():
        raise DataError(f"{path}: column d has duplicate day labels")
    calendar = calendar.set_index("d")
    unknown = [d for d in day_columns if d not in calendar.index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", …" if len(unknown) > 5 else "")
        raise DataError(f"{path}: column d lacks day(s) {shown} used by {sales_path.name}")
    calendar = calendar.loc[day_columns]
    try:
        dates = pd.to_datetime(calendar["date"], format="%Y-%m-%d").dt.normalize()
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: column date: {exc}") from exc
    first = calendar["event_name_1"].fillna("").astype(str)
    if "event_name_2" in calendar.columns:
        second = calendar["event_name_2"].fillna("").astype(str)
        events = first.str.cat(second, sep="|").str.strip("|")
    else:
        events = first
    result = pd.DataFrame({DATE: dates, "wm_yr_wk": calendar["wm_yr_wk"], EVENT: events})
    return result.sort_values(DATE, kind="stable")


def _read_prices(path: Path) -> pd.DataFrame:
    """Weekly shelf prices keyed by (store_id, item_id, wm_yr_wk)."""
    _header(path, _PRICE_COLUMNS)
    prices = pd.read_csv(path, usecols=list(_PRICE_COLUMNS), dtype={"store_id": "str", "item_id": "str"})
    price = pd.to_numeric(prices["sell_price"], errors="coerce")
    bad = ~(price > 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise DataError(f"{path}: row {row}: column sell_price must be a number > 0")
    keys = list(_PRICE_COLUMNS[:3])
    duplicated = prices.duplicated(keys)
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0]) + 2
        raise DataError(f"{path}: row {row}: duplicate price for (store_id, item_id, wm_yr_wk)")
    return prices.assign(sell_price=price.astype(np.float64))


def _to_long(wide: pd.DataFrame, calendar: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """Reshape series × days to long rows, attach weekly prices, drop pre-launch days."""
    n_series, n_days = len(wide), len(calendar)
    sales: npt.NDArray[np.float64] = wide[list(calendar.index)].to_numpy(dtype=np.float64)

    # Price matrix series × week, filled from the price table, then read per day through its week.
    series = wide[list(_SALES_COLUMNS)].assign(series=np.arange(n_series))
    weeks = pd.Index(calendar["wm_yr_wk"].unique())
    matched = prices.merge(series, on=list(_SALES_COLUMNS), how="inner")
    week_pos = weeks.get_indexer(matched["wm_yr_wk"])
    matched = matched[week_pos >= 0]
    week_pos = week_pos[week_pos >= 0]
    by_week = np.full((n_series, len(weeks)), np.nan)
    by_week[matched["series"].to_numpy(), week_pos] = matched["sell_price"].to_numpy()
    price = by_week[:, weeks.get_indexer(calendar["wm_yr_wk"])]

    priced = ~np.isnan(price)
    launched = np.maximum.accumulate(priced, axis=1)
    last_priced = np.maximum.accumulate(np.where(priced, np.arange(n_days), 0), axis=1)
    price = np.take_along_axis(price, last_priced, axis=1)  # carry prices over gaps after launch

    keep = launched.ravel()
    series_pos = np.repeat(np.arange(n_series), n_days)[keep]
    day_pos = np.tile(np.arange(n_days), n_series)[keep]
    frame = pd.DataFrame(
        {
            DATE: calendar[DATE].to_numpy()[day_pos],
            STORE: _take(wide["store_id"], series_pos),
            ITEM: _take(wide["item_id"], series_pos),
            SALES: sales.ravel()[keep],
            PRICE: price.ravel()[keep],
            PROMO: np.zeros(len(day_pos), dtype=np.int64),
            EVENT: _take(calendar[EVENT], day_pos),
        }
    )
    # Series are sorted by (store_id, item_id) and days by date, so rows are already in schema order.
    return frame


def _take(values: pd.Series, positions: npt.NDArray[np.intp]) -> pd.Series:
    """Values at the given positions with a fresh RangeIndex (fast for Arrow-backed strings)."""
    return values.take(positions).reset_index(drop=True)

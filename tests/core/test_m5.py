"""The M5 loader: a tiny M5-layout directory converted exactly to the long schema, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retail_forecast.core.m5 import load_m5
from retail_forecast.core.schema import DATE, EVENT, ITEM, PRICE, PROMO, SALES, STORE, DataError

FIRST_DAY = pd.Timestamp("2011-01-29")  # M5's first day, a Saturday: Walmart weeks run Saturday-Friday
DAYS = 30
STORES = ("TX_1", "CA_1")  # deliberately not sorted: the loader sorts
ITEMS = ("HOUSEHOLD_1_003", "FOODS_1_001", "HOBBIES_1_002")
LATE = ("TX_1", "HOUSEHOLD_1_003")  # first price in week 3 (day index 14)
GAP = ("CA_1", "HOBBIES_1_002")  # no price in week 4: the week-3 price carries over
UNPRICED = ("TX_1", "HOBBIES_1_002")  # never on sale: dropped entirely
# (day index, event_name_1, event_name_2)
EVENTS = ((8, "SuperBowl", ""), (16, "ValentinesDay", "LentStart"), (20, "", "PresidentsDay"))


def _week(day: int) -> int:
    return 11101 + day // 7


def _sales(store: str, item: str, day: int) -> int:
    return (STORES.index(store) * 7 + ITEMS.index(item) * 3 + day) % 5


def _price(store: str, item: str, week: int) -> float:
    return round(1.5 + ITEMS.index(item) + 0.25 * (week - 11101) + 0.01 * STORES.index(store), 2)


def _first_priced_day(store: str, item: str) -> int:
    return 14 if (store, item) == LATE else 0


def _write_m5(directory: Path, *, days: int = DAYS, sales_file: str = "sales_train_evaluation.csv") -> None:
    """Write the fixture; pre-launch days hold zeros like real M5 data."""
    dates = pd.date_range(FIRST_DAY, periods=days, freq="D")
    event_1 = [""] * days
    event_2 = [""] * days
    for day, first, second in EVENTS:
        if day < days:
            event_1[day], event_2[day] = first, second
    calendar = pd.DataFrame(
        {
            "date": dates.strftime("%Y-%m-%d"),
            "wm_yr_wk": [_week(d) for d in range(days)],
            "weekday": dates.day_name(),
            "wday": [(d % 7) + 1 for d in range(days)],
            "month": dates.month,
            "year": dates.year,
            "d": [f"d_{d + 1}" for d in range(days)],
            "event_name_1": event_1,
            "event_type_1": ["Cultural" if e else "" for e in event_1],
            "event_name_2": event_2,
            "event_type_2": ["National" if e else "" for e in event_2],
            "snap_CA": [d % 2 for d in range(days)],
            "snap_TX": [1] * days,
            "snap_WI": [0] * days,
        }
    )
    calendar.to_csv(directory / "calendar.csv", index=False)

    rows = []
    for store in STORES:
        for item in ITEMS:
            start = _first_priced_day(store, item)
            values = [_sales(store, item, d) if d >= start else 0 for d in range(days)]
            rows.append(
                [f"{item}_{store}_evaluation", item, item[:-4], item.split("_")[0], store, store[:2], *values]
            )
    columns = ["id", "item_id", "dept_id", "cat_id", "store_id", "state_id"]
    columns += [f"d_{d + 1}" for d in range(days)]
    pd.DataFrame(rows, columns=columns).to_csv(directory / sales_file, index=False)

    prices = []
    for store in STORES:
        for item in ITEMS:
            if (store, item) == UNPRICED:
                continue
            for week in sorted({_week(d) for d in range(_first_priced_day(store, item), days)}):
                if (store, item) == GAP and week == 11104:
                    continue
                prices.append((store, item, week, _price(store, item, week)))
    # An unrelated item and a week outside the calendar must not disturb the join.
    prices.append(("CA_1", "FOODS_9_999", 11101, 9.99))
    prices.append(("CA_1", "FOODS_1_001", 11150, 7.77))
    pd.DataFrame(prices, columns=["store_id", "item_id", "wm_yr_wk", "sell_price"]).to_csv(
        directory / "sell_prices.csv", index=False
    )


def _expected(days: int = DAYS) -> pd.DataFrame:
    """The conversion written out row by row, independently of the loader's vectorised code."""
    events = {day: "|".join(e for e in (first, second) if e) for day, first, second in EVENTS}
    rows = []
    for store in sorted(STORES):
        for item in sorted(ITEMS):
            if (store, item) == UNPRICED:
                continue
            for day in range(_first_priced_day(store, item), days):
                week = _week(day)
                price_week = 11103 if (store, item) == GAP and week == 11104 else week
                rows.append(
                    {
                        DATE: FIRST_DAY + pd.Timedelta(days=day),
                        STORE: store,
                        ITEM: item,
                        SALES: float(_sales(store, item, day)),
                        PRICE: _price(store, item, price_week),
                        PROMO: 0,
                        EVENT: events.get(day, ""),
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def m5_dir(tmp_path: Path) -> Path:
    _write_m5(tmp_path)
    return tmp_path


def test_converts_exactly(m5_dir: Path) -> None:
    frame = load_m5(m5_dir)
    expected = _expected()
    assert list(frame.columns) == [DATE, STORE, ITEM, SALES, PRICE, PROMO, EVENT]
    assert len(frame) == 5 * DAYS - 14
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    assert pd.api.types.is_datetime64_dtype(frame[DATE])
    assert frame[SALES].dtype == np.float64
    assert frame[PRICE].dtype == np.float64
    assert pd.api.types.is_integer_dtype(frame[PROMO])
    for column in (STORE, ITEM, EVENT):
        assert pd.api.types.is_string_dtype(frame[column])


def test_drops_pre_launch_days_and_unpriced_series(m5_dir: Path) -> None:
    frame = load_m5(m5_dir)
    late = frame[(frame[STORE] == LATE[0]) & (frame[ITEM] == LATE[1])]
    assert late[DATE].min() == pd.Timestamp("2011-02-12")
    assert late[PRICE].iloc[0] == _price(*LATE, 11103)
    assert len(late) == DAYS - 14
    assert frame[[STORE, ITEM]].drop_duplicates().shape[0] == 5
    assert not ((frame[STORE] == UNPRICED[0]) & (frame[ITEM] == UNPRICED[1])).any()


def test_events_and_promo(m5_dir: Path) -> None:
    frame = load_m5(m5_dir)
    days = frame.drop_duplicates(DATE).set_index(DATE)[EVENT]
    assert days[pd.Timestamp("2011-02-06")] == "SuperBowl"
    assert days[pd.Timestamp("2011-02-14")] == "ValentinesDay|LentStart"
    assert days[pd.Timestamp("2011-02-18")] == "PresidentsDay"
    assert (days != "").sum() == 3
    assert (frame[PROMO] == 0).all()


def test_filters_stores_and_limits_series(m5_dir: Path) -> None:
    texas = load_m5(m5_dir, stores=["TX_1"])
    pd.testing.assert_frame_equal(
        texas, _expected().query("store_id == 'TX_1'").reset_index(drop=True), check_dtype=False
    )
    first_two = load_m5(m5_dir, max_series=2)
    assert first_two[[STORE, ITEM]].drop_duplicates().values.tolist() == [
        ["CA_1", "FOODS_1_001"],
        ["CA_1", "HOBBIES_1_002"],
    ]
    assert len(first_two) == 2 * DAYS
    with pytest.raises(DataError, match="WI_3"):
        load_m5(m5_dir, stores=["CA_1", "WI_3"])


def test_prefers_evaluation_file_and_falls_back_to_validation(tmp_path: Path) -> None:
    _write_m5(tmp_path, days=DAYS, sales_file="sales_train_validation.csv")
    assert load_m5(tmp_path)[DATE].max() == FIRST_DAY + pd.Timedelta(days=DAYS - 1)
    longer = tmp_path / "both"
    longer.mkdir()
    _write_m5(longer, days=DAYS - 2, sales_file="sales_train_validation.csv")
    _write_m5(longer, days=DAYS, sales_file="sales_train_evaluation.csv")
    assert load_m5(longer)[DATE].max() == FIRST_DAY + pd.Timedelta(days=DAYS - 1)


@pytest.mark.parametrize("name", ["sales_train_evaluation.csv", "calendar.csv", "sell_prices.csv"])
def test_missing_file_is_named(m5_dir: Path, name: str) -> None:
    (m5_dir / name).unlink()
    expected = "sales_train_validation.csv" if name.startswith("sales") else name
    with pytest.raises(DataError, match=expected):
        load_m5(m5_dir)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_m5(tmp_path / "nope")


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("sales_train_evaluation.csv", "store_id"),
        ("sales_train_evaluation.csv", "item_id"),
        ("calendar.csv", "d"),
        ("calendar.csv", "wm_yr_wk"),
        ("calendar.csv", "event_name_1"),
        ("sell_prices.csv", "sell_price"),
        ("sell_prices.csv", "wm_yr_wk"),
    ],
)
def test_missing_column_is_named(m5_dir: Path, name: str, column: str) -> None:
    path = m5_dir / name
    pd.read_csv(path).drop(columns=[column]).to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"{name}: missing column\(s\) {column}"):
        load_m5(m5_dir)


def test_sales_without_day_columns(m5_dir: Path) -> None:
    path = m5_dir / "sales_train_evaluation.csv"
    frame = pd.read_csv(path)
    frame[[c for c in frame.columns if not c.startswith("d_")]].to_csv(path, index=False)
    with pytest.raises(DataError, match=r"sales_train_evaluation\.csv: missing column\(s\) d_1\.\.d_N"):
        load_m5(m5_dir)


def test_day_missing_from_calendar(m5_dir: Path) -> None:
    path = m5_dir / "calendar.csv"
    pd.read_csv(path).iloc[:-2].to_csv(path, index=False)
    with pytest.raises(DataError, match=r"calendar\.csv: column d lacks day\(s\) d_29, d_30"):
        load_m5(m5_dir)


def test_non_positive_price(m5_dir: Path) -> None:
    path = m5_dir / "sell_prices.csv"
    prices = pd.read_csv(path)
    prices.loc[3, "sell_price"] = 0.0
    prices.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"sell_prices\.csv: row 5: column sell_price"):
        load_m5(m5_dir)


@pytest.mark.parametrize(
    ("sample", "series", "first", "last"),
    [
        ("ten-series-full-history", 10, "2011-01-29", "2016-04-24"),
        ("seventy-series-last-140-days", 70, "2016-01-04", "2016-05-22"),
    ],
)
def test_real_m5_samples_load_with_sales_and_events_as_published(
    real_datasets: Path, sample: str, series: int, first: str, last: str
) -> None:
    """Real M5 files: every loaded sales value is the raw file's `d_N` cell for that series and day, and
    the calendar's events land on their dates."""
    folder = real_datasets / "m5-sample" / sample
    frame = load_m5(folder)
    assert frame.groupby([STORE, ITEM]).ngroups == series
    assert (frame[DATE].min(), frame[DATE].max()) == (pd.Timestamp(first), pd.Timestamp(last))

    (sales_file,) = folder.glob("sales_train_*.csv")
    wide = pd.read_csv(sales_file).set_index([STORE, ITEM])
    day = (frame[DATE] - FIRST_DAY).dt.days + 1
    raw = [wide.at[(s, i), f"d_{d}"] for s, i, d in zip(frame[STORE], frame[ITEM], day, strict=True)]
    np.testing.assert_array_equal(frame[SALES].to_numpy(), np.asarray(raw, dtype=float))

    calendar = pd.read_csv(folder / "calendar.csv", parse_dates=["date"])
    super_bowl = calendar.loc[calendar["event_name_1"] == "SuperBowl", "date"]
    on_super_bowl = frame[frame[DATE].isin(super_bowl)]
    assert len(on_super_bowl) > 0
    assert (on_super_bowl[EVENT].str.contains("SuperBowl")).all()

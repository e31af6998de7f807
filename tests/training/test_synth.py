"""The synthetic sales generator: schema, determinism, and the statistical structure it promises."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pytest

from retail_forecast.core.schema import DATE, EVENT, ITEM, PRICE, PROMO, SALES, SERIES_KEY, STORE, Freq
from retail_forecast.training.synth import COLUMNS, synthesize, synthesize_to

KEY = list(SERIES_KEY)


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    frame: pd.DataFrame = synthesize(seed=11)
    return frame


@pytest.fixture(scope="module")
def weekly() -> pd.DataFrame:
    frame: pd.DataFrame = synthesize(stores=20, items=40, freq=Freq.WEEKLY, seed=5)
    return frame


def _normalised(frame: pd.DataFrame, min_mean: float = 1.0) -> pd.DataFrame:
    """Rows of series selling at least `min_mean` per period, with sales divided by the series mean."""
    mean = frame.groupby(KEY)[SALES].transform("mean")
    busy = frame[mean >= min_mean]
    return busy.assign(norm=busy[SALES] / mean[mean >= min_mean])


# --- determinism and schema ---------------------------------------------------------------------------


def test_same_seed_gives_identical_frames() -> None:
    first = synthesize(stores=3, items=7, periods=120, seed=42)
    second = synthesize(stores=3, items=7, periods=120, seed=42)
    pd.testing.assert_frame_equal(first, second)
    assert first.to_csv(index=False).encode() == second.to_csv(index=False).encode()


def test_different_seed_gives_different_data() -> None:
    first = synthesize(stores=3, items=7, periods=120, seed=1)
    second = synthesize(stores=3, items=7, periods=120, seed=2)
    assert not first.equals(second)
    assert not np.array_equal(first[PRICE].to_numpy()[:100], second[PRICE].to_numpy()[:100])


@pytest.mark.parametrize("freq", [Freq.DAILY, Freq.WEEKLY])
def test_schema_and_dtypes(freq: Freq) -> None:
    frame = synthesize(stores=4, items=20, freq=freq, seed=3)
    assert tuple(frame.columns) == COLUMNS
    assert pd.api.types.is_datetime64_dtype(frame[DATE])
    assert (frame[DATE] == frame[DATE].dt.normalize()).all()
    for column in (STORE, ITEM, EVENT):
        assert pd.api.types.is_string_dtype(frame[column]), column
    assert frame[SALES].dtype == np.float64
    assert frame[PRICE].dtype == np.float64
    assert pd.api.types.is_integer_dtype(frame[PROMO])
    assert set(frame[PROMO].unique()) <= {0, 1}
    assert not frame.isna().any().any()
    assert (frame[SALES] >= 0).all()
    assert (frame[SALES] == np.round(frame[SALES])).all(), "sales are counts"
    assert (frame[PRICE] > 0).all()
    assert not frame.duplicated([*KEY, DATE]).any()
    assert frame[KEY].drop_duplicates().shape[0] == 4 * 20
    ordered = frame.sort_values([*KEY, DATE], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, ordered)
    assert frame.index.equals(pd.RangeIndex(len(frame)))


def test_daily_dates_are_consecutive(daily: pd.DataFrame) -> None:
    assert daily[DATE].min() == pd.Timestamp("2022-01-03")
    assert daily[DATE].nunique() == 730
    steps = daily.groupby(KEY)[DATE].diff().dropna()
    assert (steps == pd.Timedelta(days=1)).all()


def test_weekly_dates_share_a_weekday_seven_days_apart(weekly: pd.DataFrame) -> None:
    assert weekly[DATE].nunique() == 156
    assert weekly[DATE].dt.day_of_week.nunique() == 1
    assert weekly[DATE].min() == pd.Timestamp("2022-01-03")
    steps = weekly.groupby(KEY)[DATE].diff().dropna()
    assert (steps == pd.Timedelta(days=7)).all()


def test_explicit_periods_and_start() -> None:
    frame = synthesize(stores=1, items=2, periods=10, freq=Freq.WEEKLY, start="2023-05-07 13:45")
    assert list(frame[DATE].drop_duplicates()) == list(pd.date_range("2023-05-07", periods=10, freq="7D"))


@pytest.mark.parametrize(
    "call",
    [
        lambda: synthesize(stores=0),
        lambda: synthesize(items=0),
        lambda: synthesize(periods=0),
        lambda: synthesize(freq=cast(Freq, "M")),
    ],
    ids=["stores", "items", "periods", "freq"],
)
def test_rejects_invalid_arguments(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


# --- statistical structure ----------------------------------------------------------------------------


def test_weekday_seasonality_in_daily_data(daily: pd.DataFrame) -> None:
    rows = _normalised(daily)
    by_day = rows.groupby(rows[DATE].dt.day_of_week)["norm"]
    means: pd.Series[float] = by_day.mean()
    errors: pd.Series[float] = by_day.std() / np.sqrt(by_day.count())
    # Differences between weekdays dwarf their sampling error, and weekends are the busy days.
    assert means.max() - means.min() > 8 * errors.max()
    assert means[[5, 6]].mean() > 1.15 * means[[0, 1, 2, 3]].mean()


def test_yearly_season_peaks_in_december(weekly: pd.DataFrame) -> None:
    rows = _normalised(weekly)
    by_month = rows.groupby(rows[DATE].dt.month)["norm"].mean()
    assert by_month.idxmax() == 12
    assert by_month[12] > 1.15 * by_month[[3, 4, 5, 6, 7, 8]].mean()


def test_promotions_lift_sales(daily: pd.DataFrame) -> None:
    share = daily[PROMO].mean()
    assert 0.03 < share < 0.12
    means = daily.groupby([*KEY, PROMO])[SALES].mean().unstack(PROMO).dropna()
    means = means[means[0] >= 1.0]
    assert len(means) > 100
    ratio = means[1] / means[0]
    assert ratio.median() > 1.1
    # Promotions come in runs of several periods, not as isolated single days.
    starts = daily[PROMO].diff().fillna(daily[PROMO]).clip(lower=0).sum()
    assert daily[PROMO].sum() / starts > 2.5


def test_promotions_lift_weekly_sales(weekly: pd.DataFrame) -> None:
    means = weekly.groupby([*KEY, PROMO])[SALES].mean().unstack(PROMO).dropna()
    means = means[means[0] >= 1.0]
    assert (means[1] / means[0]).median() > 1.1


def test_demand_falls_when_price_rises(daily: pd.DataFrame) -> None:
    rows = daily[daily[PROMO] == 0]
    rows = rows[rows.groupby(KEY)[SALES].transform("mean") >= 2.0]
    groups = [rows[column] for column in KEY]
    log_price = np.log(rows[PRICE])
    log_sales = np.log1p(rows[SALES])
    x = log_price - log_price.groupby(groups).transform("mean")
    y = log_sales - log_sales.groupby(groups).transform("mean")
    assert x.std() > 0.05, "prices must vary within series"
    assert np.corrcoef(x, y)[0, 1] < -0.1


def test_prices_have_markdowns_and_permanent_changes(daily: pd.DataFrame) -> None:
    per_series = daily.groupby(KEY)[PRICE]
    marked_down = (daily[PRICE] < 0.92 * per_series.transform("max")).groupby([daily[STORE], daily[ITEM]])
    assert marked_down.any().mean() > 0.5
    first_last = per_series.agg(["first", "last"])
    assert (first_last["first"] != first_last["last"]).mean() > 0.3


def test_many_intermittent_series(daily: pd.DataFrame, weekly: pd.DataFrame) -> None:
    for frame in (daily, weekly):
        zero_share = (frame[SALES] == 0).groupby([frame[STORE], frame[ITEM]]).mean()
        assert 0.1 < (zero_share > 0.5).mean() < 0.45
        # ... but most series are regular sellers.
        assert (zero_share < 0.2).mean() > 0.5


def test_christmas_day_is_closed(daily: pd.DataFrame) -> None:
    christmas = daily[(daily[DATE].dt.month == 12) & (daily[DATE].dt.day == 25)]
    assert christmas[DATE].nunique() == 2
    assert (christmas[EVENT] == "christmas").all()
    assert (christmas[SALES] == 0).all()
    eve = daily[(daily[DATE].dt.month == 12) & (daily[DATE].dt.day == 24)]
    assert eve[SALES].sum() > 0


def test_event_calendar(daily: pd.DataFrame, weekly: pd.DataFrame) -> None:
    days = daily.drop_duplicates(DATE).set_index(DATE)[EVENT]
    assert days[pd.Timestamp("2022-04-17")] == "easter"
    assert days[pd.Timestamp("2023-04-09")] == "easter"
    assert days[pd.Timestamp("2022-11-25")] == "black_friday"
    assert days[pd.Timestamp("2023-11-24")] == "black_friday"
    assert days[pd.Timestamp("2023-01-01")] == "new_year"
    assert days[pd.Timestamp("2022-08-17")] == "back_to_school"
    assert days[pd.Timestamp("2022-03-01")] == ""
    assert (days != "").mean() < 0.1
    weeks = weekly.drop_duplicates(DATE).set_index(DATE)[EVENT]
    # The week of Monday 2022-12-19 holds Christmas Eve (Sat) and Christmas (Sun).
    assert weeks[pd.Timestamp("2022-12-19")] == "christmas_eve|christmas"
    assert weeks[pd.Timestamp("2022-11-21")] == "thanksgiving|black_friday"
    assert weeks[pd.Timestamp("2022-03-07")] == ""


def test_black_friday_lifts_sales(daily: pd.DataFrame) -> None:
    rows = _normalised(daily)
    friday = rows[rows[EVENT] == "black_friday"]["norm"].mean()
    other_fridays = rows[(rows[DATE].dt.day_of_week == 4) & (rows[EVENT] == "")]["norm"].mean()
    assert friday > 1.3 * other_fridays


def test_some_series_start_late_and_some_end_early(daily: pd.DataFrame) -> None:
    spans = daily.groupby(KEY)[DATE].agg(["min", "max"])
    late = spans["min"] > daily[DATE].min()
    early = spans["max"] < daily[DATE].max()
    assert 0 < late.mean() < 0.25
    assert 0 < early.mean() < 0.25
    # A late item is launched in most stores, i.e. it is an item-level event, not a data hole.
    late_items = spans[late].index.get_level_values(ITEM).unique()
    assert len(late_items) >= 2


def test_writes_csv_and_parquet(tmp_path: Path) -> None:
    kwargs: dict[str, object] = {"stores": 2, "items": 5, "periods": 30, "seed": 9}
    frame = synthesize_to(tmp_path / "sub" / "sales.csv", **kwargs)
    text = (tmp_path / "sub" / "sales.csv").read_text().splitlines()
    assert text[0] == ",".join(COLUMNS)
    assert text[1].startswith("2022-01-03,store_01,item_001,")
    back = pd.read_csv(tmp_path / "sub" / "sales.csv", parse_dates=[DATE], keep_default_na=False)
    assert len(back) == len(frame)
    np.testing.assert_array_equal(back[SALES].to_numpy(), frame[SALES].to_numpy())
    np.testing.assert_array_equal(back[DATE].to_numpy(), frame[DATE].to_numpy())

    parquet = synthesize_to(tmp_path / "sales.parquet", **kwargs)
    pd.testing.assert_frame_equal(parquet, frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sales.parquet"), frame, check_dtype=False)

    with pytest.raises(ValueError, match=r"\.xlsx"):
        synthesize_to(tmp_path / "sales.xlsx")


@pytest.mark.parametrize(
    ("stores", "items", "periods", "freq"),
    [(50, 50, 140, Freq.WEEKLY), (10, 50, 730, Freq.DAILY)],
    ids=["2500x140-weekly", "500x730-daily"],
)
def test_large_frames_are_fast(stores: int, items: int, periods: int, freq: Freq) -> None:
    began = time.perf_counter()
    frame = synthesize(stores=stores, items=items, periods=periods, freq=freq)
    elapsed = time.perf_counter() - began
    assert frame[KEY].drop_duplicates().shape[0] == stores * items
    assert frame[DATE].nunique() == periods
    assert elapsed < 10.0

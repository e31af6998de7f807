from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retail_forecast.core.data import build_panel, infer_freq, read_sales, validate_sales
from retail_forecast.core.schema import DataError, Freq


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sales.csv"
    path.write_text(text)
    return path


GOOD = """date,store_id,item_id,sales,price,promo,event
2024-01-01,s1,i1,3,2.5,0,
2024-01-02,s1,i1,4,2.5,1,new_year
2024-01-03,s1,i1,-2,2.5,0,
2024-01-01,s1,i2,10,,0,
2024-01-02,s1,i2,11,1.0,0,
"""


def test_reads_a_valid_csv_with_canonical_types(tmp_path: Path) -> None:
    frame = read_sales(write_csv(tmp_path, GOOD))
    assert list(frame.columns) == ["date", "store_id", "item_id", "sales", "price", "promo", "event"]
    assert frame["date"].dtype == "datetime64[ns]"
    assert frame["sales"].tolist() == [3, 4, -2, 10, 11]  # clipping happens in the panel, counted
    assert frame["event"].tolist() == ["", "new_year", "", "", ""]
    assert np.isnan(frame["price"].iloc[3])


def test_parquet_round_trip_matches_csv(tmp_path: Path) -> None:
    csv = read_sales(write_csv(tmp_path, GOOD))
    parquet = tmp_path / "sales.parquet"
    pd.read_csv(tmp_path / "sales.csv").to_parquet(parquet)
    pd.testing.assert_frame_equal(read_sales(parquet), csv, check_dtype=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("date,store_id,sales\n2024-01-01,s,1\n", "missing required column(s) item_id"),
        ("date,store_id,item_id,sales\n2024-01-01,s,i,1\n2024-13-02,s,i,1\n", "line 3, column 'date'"),
        ("date,store_id,item_id,sales\n2024-01-01,s,i,1\n2024-01-02,s,i,lots\n", "line 3, column 'sales'"),
        ("date,store_id,item_id,sales\n2024-01-01,s,i,\n", "line 2, column 'sales'"),
        ("date,store_id,item_id,sales\n2024-01-01,,i,1\n", "line 2, column 'store_id'"),
        (
            "date,store_id,item_id,sales,price\n2024-01-01,s,i,1,0\n",
            "line 2, column 'price': price must be > 0",
        ),
        ("date,store_id,item_id,sales,promo\n2024-01-01,s,i,1,2\n", "line 2, column 'promo'"),
        ("date,store_id,item_id,sales\n2024-01-01T10:00,s,i,1\n", "time of day"),
        (
            "date,store_id,item_id,sales\n2024-01-01,s,i,1\n2024-01-02,s,i,1\n2024-01-01,s,i,2\n",
            "lines 2 and 4: duplicate (date, store_id, item_id) = (2024-01-01, s, i)",
        ),
    ],
)
def test_bad_input_names_file_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=r"sales\.csv") as caught:
        read_sales(write_csv(tmp_path, text))
    assert message in str(caught.value)


def test_unsupported_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_sales(tmp_path / "nope.csv")
    (tmp_path / "sales.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported file type"):
        read_sales(tmp_path / "sales.json")


def test_gap_policy_fills_closed_days_and_keeps_spans() -> None:
    frame = validate_sales(
        pd.DataFrame(
            {
                "date": ["2024-01-01", "2024-01-02", "2024-01-04", "2024-01-03", "2024-01-04", "2024-01-01"],
                "store_id": ["a", "a", "a", "b", "b", "c"],
                "item_id": ["x", "x", "x", "x", "x", "x"],
                "sales": [1.0, -3.0, 5.0, 2.0, 2.0, 7.0],
                "price": [2.0, None, 3.0, 1.0, 1.0, 4.0],
            }
        )
    )
    panel, report = build_panel(frame)
    assert panel.freq is Freq.DAILY
    assert panel.n_periods == 4
    by_key = {(s, i): k for k, (s, i) in enumerate(zip(panel.store_ids, panel.item_ids, strict=True))}
    a, b, c = by_key["a", "x"], by_key["b", "x"], by_key["c", "x"]
    np.testing.assert_array_equal(panel.sales[a], [1.0, 0.0, 0.0, 5.0])  # clipped return, closed day
    np.testing.assert_array_equal(panel.sales[b], [np.nan, np.nan, 2.0, 2.0])  # starts late: not padded
    np.testing.assert_array_equal(panel.sales[c], [7.0, np.nan, np.nan, np.nan])  # ends early
    np.testing.assert_array_equal(panel.price[a], [2.0, 2.0, 2.0, 3.0])  # carried forward
    assert report.negative_sales_clipped == 1
    assert report.closed_periods_filled == 1
    assert report.series_with_closed_periods == 1
    assert report.series_starting_late == 1
    assert report.series_ending_early == 1
    assert report.missing_prices_filled == 2


def test_weekly_data_must_share_a_weekday() -> None:
    frame = validate_sales(
        pd.DataFrame(
            {
                "date": ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-23"],
                "store_id": "s",
                "item_id": "i",
                "sales": 1.0,
            }
        )
    )
    with pytest.raises(DataError, match="weekly data must fall on one weekday"):
        build_panel(frame, Freq.WEEKLY)


def test_frequency_is_inferred_and_mismatch_refused() -> None:
    weekly = validate_sales(
        pd.DataFrame(
            {
                "date": pd.date_range("2024-01-01", periods=10, freq="7D"),
                "store_id": "s",
                "item_id": "i",
                "sales": 1.0,
            }
        )
    )
    assert infer_freq(weekly["date"]) is Freq.WEEKLY
    panel, _ = build_panel(weekly)
    assert panel.freq is Freq.WEEKLY and panel.n_periods == 10
    with pytest.raises(DataError, match="--freq D was given but the dates are weekly"):
        build_panel(weekly, Freq.DAILY)


def test_real_favorita_data_loads_with_reported_gaps(real_datasets: Path) -> None:
    favorita = real_datasets / "favorita" / "transactions_daily.csv"
    panel, report = build_panel(read_sales(favorita), source=str(favorita))
    assert panel.freq is Freq.DAILY
    assert panel.n_series == 54
    assert report.rows == 83_488
    assert report.closed_periods_filled > 0  # stores close on 25 December and 1 January
    assert report.series_starting_late > 0  # stores that open part-way through
    christmas = panel.dates.get_loc(pd.Timestamp("2016-12-25"))
    observed = ~np.isnan(panel.sales[:, christmas])
    assert (panel.sales[observed, christmas] == 0).all()


def test_validated_rows_come_sorted_by_store_item_and_date_and_renumbered() -> None:
    """Keys sort as strings ("s10" before "s9"), whatever order the rows arrive in."""
    rng = np.random.default_rng(0)
    keys = [(store, item) for store in ("s9", "s10", "s1") for item in ("b", "a ", "c")]
    dates = pd.date_range("2024-01-01", periods=5, freq="D")
    rows = [(day, store, item, float(k)) for k, (store, item) in enumerate(keys) for day in dates]
    frame = pd.DataFrame(rows, columns=["date", "store_id", "item_id", "sales"]).iloc[
        rng.permutation(len(rows))
    ]
    out = validate_sales(frame)
    assert list(out.index) == list(range(len(rows)))
    assert list(out.columns) == ["date", "store_id", "item_id", "sales", "price", "promo", "event"]
    expected = sorted((store, item.strip(), day) for day, store, item, _ in rows)
    assert list(zip(out["store_id"], out["item_id"], out["date"], strict=True)) == expected
    # each row keeps its own values
    assert out.groupby(["store_id", "item_id"])["sales"].nunique().eq(1).all()

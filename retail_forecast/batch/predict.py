"""`forecast predict`: every series of a dataset forecast with one model version, chunk by chunk.

A series' batch forecast is, by construction, what `/v1/forecast` answers when sent the series' rows of
the history window (`history_window`) and no future points: the same gap policy (`build_panel`), the same
future covariates (`extend_for_forecast`: last known price, no promo, no event) and the same feature rows
(`forecast_features`), scored by the same `LoadedModel.predict`.

Memory: the input is read in parts of `READ_ROWS` rows and only the rows of the history window are kept
(series × window rows); panels, feature rows and predictions exist for one chunk of series at a time.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals
from tqdm import tqdm

from retail_forecast.batch.input import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    local_input,
    unsupported_suffix,
)
from retail_forecast.batch.output import write_forecasts
from retail_forecast.batch.summary import RunSummary
from retail_forecast.core import features as feat
from retail_forecast.core.data import Panel, build_panel, validate_sales
from retail_forecast.core.schema import DATE, ITEM, SERIES_KEY, STORE, DataError, Freq
from retail_forecast.inference.forecast import forecast_features
from retail_forecast.inference.model import LoadedModel

READ_ROWS: Final = 500_000
DEFAULT_CHUNK_SERIES: Final = 2_000
# Quantile columns are named as the graph's quantile outputs (`manifest.quantile_output_name`).
QUANTILE_OUTPUT: Final = re.compile(r"^q(0\.\d+)$")
COVARIATES_POLICY: Final = "last known price carried forward, no promo, no event"

# The Parquet contract (docs/DESIGN.md): these columns, then one float32 column per quantile output.
KEY_FIELDS: Final = (
    pa.field("store_id", pa.string(), nullable=False),
    pa.field("item_id", pa.string(), nullable=False),
    pa.field("origin", pa.date32(), nullable=False),
    pa.field("date", pa.date32(), nullable=False),
    pa.field("horizon", pa.int32(), nullable=False),
    pa.field("yhat", pa.float32(), nullable=False),
)


def history_window(manifest_min_history: int, freq: Freq) -> int:
    """Periods of history read per series: what the features need, plus a season so that a few closed
    days at the window's start never cost a series its forecast."""
    return manifest_min_history + freq.season


def output_schema(model: LoadedModel, origin: pd.Timestamp, horizon: int) -> pa.Schema:
    """Columns, plus the file metadata that says which model made the forecasts and how."""
    manifest = model.manifest
    fields = [*KEY_FIELDS, *(pa.field(q, pa.float32(), nullable=False) for q in model.quantile_outputs)]
    metadata = {
        "model_name": manifest.name,
        "model_version": manifest.version,
        "model_sha256": manifest.sha256,
        "origin": origin.date().isoformat(),
        "horizon": str(horizon),
        "freq": manifest.freq,
        "feature_spec": manifest.features.spec_version,
        "covariates": COVARIATES_POLICY,
        "metrics": json.dumps({k: v.model_dump() for k, v in manifest.metrics.items()}),
        "metrics_by_horizon": json.dumps([s.wape for s in manifest.metrics_by_horizon.get("model", [])]),
    }
    if (
        manifest.quantiles is not None
    ):  # the quantiles' holdout scores: `forecast evaluate`'s backtest coverage
        metadata["quantile_metrics"] = manifest.quantiles.metrics.model_dump_json()
    return pa.schema(fields, metadata=metadata)


@dataclass
class PredictReport:
    """What happened to every series of the data: forecast, or skipped and why."""

    series: int = 0
    forecast: int = 0
    ended_before_origin: int = 0
    too_short: int = 0
    rows: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"series in the history window: {self.series}",
            f"series forecast: {self.forecast} ({self.rows} rows)",
            f"skipped, no sales at the origin (ended earlier): {self.ended_before_origin}",
            f"skipped, fewer periods of history than the model needs: {self.too_short}",
            *self.notes,
        ]

    def summary(self, model: LoadedModel, out: str) -> RunSummary:
        """The run in one line for whoever started it (the batch CronJob's termination message)."""
        manifest = model.manifest
        return RunSummary(
            model=manifest.name,
            version=manifest.version,
            sha256=manifest.sha256,
            output=out,
            series=self.series,
            forecast=self.forecast,
            rows=self.rows,
        )


def _parts(path: Path, source: str) -> Iterator[tuple[pd.DataFrame, int, bool]]:
    """The raw file in parts of `READ_ROWS`: (frame, first row, is CSV); an M5 folder in one part.
    Errors name `source` (what the user gave, e.g. a blob URI), not a temporary copy."""
    suffix = path.suffix.lower()
    if path.is_dir():
        from retail_forecast.core.m5 import load_m5  # noqa: PLC0415

        yield load_m5(path), 0, False
        return
    if not path.exists():
        raise DataError(f"{source}: no such file")
    offset = 0
    if suffix in CSV_SUFFIXES:
        try:
            with pd.read_csv(
                path, dtype=str, keep_default_na=False, na_values=[""], chunksize=READ_ROWS
            ) as reader:
                for frame in reader:
                    yield frame, offset, True
                    offset += len(frame)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{source}: not a readable CSV file ({exc})") from None
        return
    if suffix in PARQUET_SUFFIXES:
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS)
            for batch in batches:
                frame = batch.to_pandas()
                yield frame, offset, False
                offset += len(frame)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{source}: not a readable Parquet file ({exc})") from None
        return
    raise unsupported_suffix(source, suffix)


def read_window(
    path: Path, freq: Freq, window: int, origin: pd.Timestamp | None, source: str | None = None
) -> pd.DataFrame:
    """The validated rows of the `window` periods ending at `origin` (default: the data's last date).

    Every part is validated as training validates a file (errors name the file's row); rows after the
    origin and before the window are dropped as soon as they are known to be, so memory holds about
    series × window rows.
    """
    source = source or str(path)
    span = pd.Timedelta(days=freq.days * (window - 1))
    kept: list[pd.DataFrame] = []
    latest: pd.Timestamp | None = origin
    for raw, first_row, csv in _parts(path, source):
        if raw.empty:
            continue
        frame = validate_sales(raw, source=source, csv=csv, first_row=first_row)
        if origin is not None:
            frame = frame[frame[DATE] <= origin]
        elif latest is None or frame[DATE].max() > latest:
            latest = frame[DATE].max()
            kept = [f[f[DATE] >= latest - span] for f in kept]
        assert latest is not None
        # series keys as categories: the window's rows hold one code per row, not one string object each
        kept.append(frame[frame[DATE] >= latest - span].astype({STORE: "category", ITEM: "category"}))
    if latest is None:
        raise DataError(f"{source}: no data rows")
    if not any(len(f) for f in kept):
        raise DataError(f"{source}: no rows in the {window} periods up to the origin {latest.date()}")
    rows = pd.DataFrame(
        {
            column: union_categoricals([f[column] for f in kept], sort_categories=True)
            if column in SERIES_KEY
            else pd.concat([f[column] for f in kept], ignore_index=True)
            for column in kept[0].columns
        }
    )
    duplicated = rows.duplicated([DATE, *SERIES_KEY])
    if duplicated.any():
        first = rows[duplicated].iloc[0]
        raise DataError(
            f"{source}: duplicate (date, store_id, item_id) = ({first[DATE].date()}, {first[STORE]}, "
            f"{first[ITEM]}); {int(duplicated.sum())} rows are duplicates"
        )
    return rows.sort_values([STORE, ITEM, DATE], kind="stable").reset_index(drop=True)


def window_panel(rows: pd.DataFrame, freq: Freq, window: int, origin: pd.Timestamp, source: str) -> Panel:
    """The window's rows on the calendar of exactly `window` periods ending at the origin (gap policy
    applied by `build_panel`, as training applies it)."""
    panel, _ = build_panel(rows, freq, source=source)
    start = origin - pd.Timedelta(days=freq.days * (window - 1))
    dates = pd.date_range(start, origin, freq=f"{freq.days}D")
    days = (panel.dates[0] - start).days  # >= 0: the rows lie inside the window
    if days % freq.days:
        raise DataError(f"{source}: the origin {origin.date()} is not on the data's weekly calendar")
    offset = days // freq.days

    def place(values: np.ndarray, fill: object) -> np.ndarray:
        out = np.full((panel.n_series, window), fill, dtype=values.dtype)
        out[:, offset : offset + panel.n_periods] = values
        return out

    return Panel(
        freq=freq,
        dates=pd.DatetimeIndex(dates),
        store_ids=panel.store_ids,
        item_ids=panel.item_ids,
        sales=place(panel.sales, np.nan),
        price=place(panel.price, np.nan),
        promo=place(panel.promo, 0.0),
        event=place(panel.event, False),
    )


def forecast_chunks(
    model: LoadedModel,
    panel: Panel,
    horizon: int,
    schema: pa.Schema,
    report: PredictReport,
    chunk_series: int = DEFAULT_CHUNK_SERIES,
    progress: Callable[[int], object] = lambda _: None,
) -> Iterator[pa.Table]:
    """One table per chunk of forecastable series (forecast from the panel's last period)."""
    spec = feat.spec_for(panel.freq)
    last = panel.n_periods - 1
    observed_at_origin = ~np.isnan(panel.sales[:, last])
    enough = feat.valid_origins(panel, spec)[:, last]
    report.series += panel.n_series
    report.ended_before_origin += int((~observed_at_origin).sum())
    report.too_short += int((observed_at_origin & ~enough).sum())
    usable = np.flatnonzero(observed_at_origin & enough)
    report.forecast += len(usable)
    progress(panel.n_series - len(usable))
    origin_day = panel.dates[last].date()
    step = np.timedelta64(panel.freq.days, "D")
    for start in range(0, len(usable), chunk_series):
        chunk = panel.select_series(usable[start : start + chunk_series])
        _, _, rows = forecast_features(chunk, horizon)
        n = chunk.n_series
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = model.predict_all(rows)  # point, then quantiles: as /v1/forecast scores them
        if not np.isfinite(outputs).all():
            k = int(np.flatnonzero(~np.isfinite(outputs).all(axis=1))[0]) // horizon
            raise DataError(
                f"series ({chunk.store_ids[k]}, {chunk.item_ids[k]}): its history's values are too large "
                "to forecast (the features overflow)"
            )
        horizons = np.tile(np.arange(1, horizon + 1, dtype=np.int32), n)
        origin = np.datetime64(origin_day, "D")
        columns: dict[str, pa.Array] = {
            "store_id": pa.array(np.repeat(chunk.store_ids, horizon), pa.string()),
            "item_id": pa.array(np.repeat(chunk.item_ids, horizon), pa.string()),
            "origin": pa.array(np.full(n * horizon, origin), pa.date32()),
            "date": pa.array(origin + horizons.astype(np.int64) * step, pa.date32()),
            "horizon": pa.array(horizons, pa.int32()),
            **{
                name: pa.array(np.ascontiguousarray(outputs[:, k]), pa.float32())
                for k, name in enumerate(("yhat", *model.quantile_outputs))
            },
        }
        report.rows += n * horizon
        yield pa.Table.from_pydict(columns, schema=schema)
        progress(n)


def predict(
    data: Path | str,
    model: LoadedModel,
    out: str,
    *,
    origin: pd.Timestamp | None = None,
    horizon: int | None = None,
    chunk_series: int = DEFAULT_CHUNK_SERIES,
    progress: bool = False,
    max_input_bytes: int | None = None,
) -> PredictReport:
    """Forecast every series of `data` that has sales at the origin and enough history; write one
    Parquet run to `out` (local path or azureblob://), all of it or nothing. `data` may be a blob
    (`batch/input.py`), copied locally while it is read."""
    manifest = model.manifest
    horizon = horizon or manifest.horizon
    if horizon > manifest.horizon:
        raise DataError(f"horizon: {horizon} is beyond the model's horizon {manifest.horizon}")
    freq = Freq(manifest.freq)
    window = history_window(manifest.min_history, freq)
    with local_input(data, max_input_bytes) as path:
        rows = read_window(path, freq, window, origin, source=str(data))
    origin = origin if origin is not None else pd.Timestamp(rows[DATE].max())
    panel = window_panel(rows, freq, window, origin, str(data))
    del rows  # the panel holds the window now
    report = PredictReport()
    schema = output_schema(model, origin, horizon)
    with tqdm(total=panel.n_series, unit="series", disable=not progress, file=sys.stderr) as bar:
        written = write_forecasts(
            out, schema, forecast_chunks(model, panel, horizon, schema, report, chunk_series, bar.update)
        )
    assert written == report.rows
    return report

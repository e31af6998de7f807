"""`forecast evaluate`: past forecasts (runs of `forecast predict`) against the actuals that have landed.

A forecast point is evaluated when the actuals hold its series and date, read with the training data
policy (`build_panel`: negative sales are returns, clipped to 0; a day missing inside a series' span is a
closed day, 0 sales). Points beyond the actuals are pending and counted. Figures are grouped by model
version, then by horizon and by store; each version's backtest figures come from the run's own file
metadata (the manifest's holdout scores, and its quantiles' holdout coverage when it has quantiles), so
the live numbers sit next to what training promised.
WAPE and bias are `training.metrics.score`'s definitions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
from prometheus_client import CollectorRegistry, Gauge

from retail_forecast.batch.predict import QUANTILE_OUTPUT
from retail_forecast.core.data import build_panel, read_sales, validate_sales
from retail_forecast.core.schema import Freq
from retail_forecast.training.metrics import ForecastBlock, score

VERSION: Final = "version"
HORIZON: Final = "horizon"
STORE: Final = "store_id"
_INTERVAL: Final = "interval"


@dataclass(frozen=True)
class Figures:
    """One group's figures; `coverage` is the share of actuals inside `interval`, the version's outermost
    quantile levels (None for a model without quantiles)."""

    group: str  # "version", "horizon" or "store_id"
    model: str
    version: str
    key: str  # the horizon or store; "" for a whole version
    points: int
    wape: float | None
    bias: float | None
    coverage: float | None
    backtest_wape: float | None
    backtest_coverage: float | None = None  # the holdout's coverage of the same interval (manifest)
    interval: str | None = None  # e.g. "q0.1-q0.9"


@dataclass(frozen=True)
class Evaluation:
    figures: list[Figures]
    evaluated: int
    pending: int

    def versions(self) -> list[Figures]:
        return [f for f in self.figures if f.group == VERSION]


def _run_frame(table: pa.Table) -> tuple[pd.DataFrame, dict[str, str]]:
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    missing = {"model_name", "model_version", "freq", "metrics"} - set(metadata)
    if missing:
        raise ValueError(f"not a forecast run of `forecast predict`: its metadata lacks {sorted(missing)}")
    frame = table.to_pandas()
    frame["model"] = metadata["model_name"]
    frame[VERSION] = metadata["model_version"]
    frame[_INTERVAL] = _interval(frame)
    return frame, metadata


def _interval(frame: pd.DataFrame) -> str | None:
    """The run's own outermost levels: runs of models with other levels (or none) are evaluated side by
    side, each against its own interval, never against columns another run brought into the union."""
    levels = sorted((c for c in frame.columns if QUANTILE_OUTPUT.fullmatch(c)), key=lambda c: float(c[1:]))
    return f"{levels[0]}-{levels[-1]}" if len(levels) >= 2 else None


def _load_actuals(path: Path) -> pd.DataFrame:
    if path.is_dir():
        from retail_forecast.core.m5 import load_m5  # noqa: PLC0415

        return validate_sales(load_m5(path), source=str(path))
    return read_sales(path)


def _none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def evaluate(runs: Sequence[pa.Table], actuals_path: Path) -> Evaluation:
    frames, backtest, backtest_coverage = [], {}, {}
    freqs = set()
    for table in runs:
        frame, metadata = _run_frame(table)
        frames.append(frame)
        metrics = json.loads(metadata["metrics"])
        backtest[metadata["model_version"]] = (
            metrics.get("model", {}).get("wape"),
            json.loads(metadata.get("metrics_by_horizon", "[]")),
        )
        quantile_metrics = json.loads(metadata.get("quantile_metrics", "null")) or {}
        backtest_coverage[metadata["model_version"]] = (
            quantile_metrics.get("coverage"),
            quantile_metrics.get("coverage_by_horizon", []),
        )
        freqs.add(metadata["freq"])
    if len(freqs) != 1:
        raise ValueError(f"the runs mix frequencies {sorted(freqs)}")
    forecasts = pd.concat(frames, ignore_index=True)

    panel, _ = build_panel(_load_actuals(actuals_path), Freq(freqs.pop()), source=str(actuals_path))
    keys = pd.MultiIndex.from_arrays([panel.store_ids, panel.item_ids])
    series = keys.get_indexer(pd.MultiIndex.from_frame(forecasts[["store_id", "item_id"]]))
    dates = pd.to_datetime(forecasts["date"]).to_numpy()
    period = (dates - panel.dates[0].to_datetime64()) // np.timedelta64(panel.freq.days, "D")
    inside = (series >= 0) & (period >= 0) & (period < panel.n_periods)
    actual = np.full(len(forecasts), np.nan)
    actual[inside] = panel.sales[series[inside], period[inside].astype(np.int64)]
    known = ~np.isnan(actual)
    points = forecasts[known].reset_index(drop=True)
    points["actual"] = actual[known]
    points["covered"] = np.nan
    for interval in points[_INTERVAL].dropna().unique():
        low, high = str(interval).split("-")
        rows = points[_INTERVAL] == interval
        covered = (points.loc[rows, "actual"] >= points.loc[rows, low]) & (
            points.loc[rows, "actual"] <= points.loc[rows, high]
        )
        points.loc[rows, "covered"] = covered.astype(float)

    figures: list[Figures] = []
    for group, by in ((VERSION, [VERSION]), (HORIZON, [VERSION, HORIZON]), (STORE, [VERSION, STORE])):
        for key, rows in points.groupby(["model", *by], sort=True):
            model, version = str(key[0]), str(key[1])
            block = ForecastBlock(
                series=np.zeros(len(rows), dtype=np.int64),
                horizon=rows[HORIZON].to_numpy(dtype=np.int64),
                actual=rows["actual"].to_numpy(dtype=float),
                predicted=rows["yhat"].to_numpy(dtype=float),
            )
            scores = score(block, np.zeros(1), np.zeros(1))  # MASE/RMSSE need history: not computed here
            reference = _reference(group, key, backtest[version])
            intervals = rows[_INTERVAL].dropna().unique()  # one model version, one graph: one interval
            interval = str(intervals[0]) if len(intervals) else None
            reference_coverage = _reference(group, key, backtest_coverage[version])
            figures.append(
                Figures(
                    group=group,
                    model=model,
                    version=version,
                    key="" if group == VERSION else str(key[2]),
                    points=len(rows),
                    wape=_none(scores.wape),
                    bias=_none(scores.bias),
                    coverage=float(rows["covered"].mean()) if interval is not None else None,
                    backtest_wape=reference,
                    backtest_coverage=reference_coverage if interval is not None else None,
                    interval=interval,
                )
            )
    return Evaluation(figures, evaluated=int(known.sum()), pending=int((~known).sum()))


def _reference(
    group: str, key: tuple[str, ...], backtest: tuple[float | None, list[float | None]]
) -> float | None:
    """The backtest figure a group is compared with: the overall one for a version, the horizon's for a
    horizon, none for a store (the holdout is not broken down by store)."""
    overall, by_horizon = backtest
    if group == VERSION:
        return overall
    if group == HORIZON and int(key[2]) <= len(by_horizon):
        return by_horizon[int(key[2]) - 1]
    return None


def table_lines(evaluation: Evaluation) -> list[str]:
    """A Markdown table: every group, live figures next to the backtest's WAPE."""

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    lines = [
        "| group | version | key | points | WAPE | backtest WAPE | bias | coverage | backtest coverage "
        "| interval |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f in evaluation.figures:
        lines.append(
            f"| {f.group} | {f.version} | {f.key} | {f.points} | {cell(f.wape)} | {cell(f.backtest_wape)} "
            f"| {cell(f.bias)} | {cell(f.coverage)} | {cell(f.backtest_coverage)} | {f.interval or ''} |"
        )
    return lines


def metrics_registry(evaluation: Evaluation) -> CollectorRegistry:
    """The figures as Prometheus gauges, for a Pushgateway or a textfile collector; the KQL alert
    `live_wape_vs_backtest.kql` compares `forecast_live_wape` with `forecast_backtest_wape`."""
    registry = CollectorRegistry()
    labels = ["model", "version"]
    live = Gauge("forecast_live_wape", "WAPE of past forecasts against actuals", labels, registry=registry)
    backtest = Gauge(
        "forecast_backtest_wape", "the model's holdout WAPE (manifest)", labels, registry=registry
    )
    bias = Gauge("forecast_live_bias", "bias of past forecasts (sum of errors / sum of actuals)", labels,
                 registry=registry)  # fmt: skip
    points = Gauge("forecast_live_points", "forecast points evaluated", labels, registry=registry)
    by_horizon = Gauge(
        "forecast_live_wape_by_horizon", "WAPE by horizon", [*labels, "horizon"], registry=registry
    )
    coverage = Gauge(
        "forecast_live_interval_coverage",
        "share of actuals inside the outermost quantile interval",
        [*labels, "interval"],
        registry=registry,
    )
    backtest_coverage = Gauge(
        "forecast_backtest_interval_coverage",
        "the model's holdout coverage of the same interval (manifest)",
        [*labels, "interval"],
        registry=registry,
    )
    for f in evaluation.figures:
        if f.group == VERSION:
            points.labels(f.model, f.version).set(f.points)
            if f.wape is not None:
                live.labels(f.model, f.version).set(f.wape)
            if f.bias is not None:
                bias.labels(f.model, f.version).set(f.bias)
            if f.backtest_wape is not None:
                backtest.labels(f.model, f.version).set(f.backtest_wape)
            if f.coverage is not None and f.interval is not None:
                coverage.labels(f.model, f.version, f.interval).set(f.coverage)
            if f.backtest_coverage is not None and f.interval is not None:
                backtest_coverage.labels(f.model, f.version, f.interval).set(f.backtest_coverage)
        elif f.group == HORIZON and f.wape is not None:
            by_horizon.labels(f.model, f.version, f.key).set(f.wape)
    return registry

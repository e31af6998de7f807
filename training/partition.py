"""One model per partition (a store, or a category column of the sales table): what the Azure ML
parallel job (aml/partition-job.yml) runs for each mini-batch.

Azure ML splits the sales table by the job's `partition_keys` and hands the entry script
(aml/partition_entry.py) one partition per mini-batch as a DataFrame. Each partition is trained by the
same `train` as `forecast train`, into its own folder of the job's output, and summarised in one row of
the job's `append_row_to` output. Expected outcomes (a failed promotion gate, too little or bad data) are
rows of that summary; anything else raises, so Azure ML retries the mini-batch and counts it against the
job's `error_threshold`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import pandas as pd

from retail_forecast.core.data import build_panel, validate_sales
from retail_forecast.core.manifest import check_name
from retail_forecast.core.schema import STORE, DataError, Freq
from retail_forecast.training import quantiles as quantiles_
from retail_forecast.training.pipeline import (
    METRICS_FILE,
    GateError,
    NotEnoughDataError,
    TrainConfig,
    train,
)

MAX_NAME: Final = 63
_NOT_NAME: Final = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class PartitionSettings:
    """The job's program arguments: where models go, the partition column, and the training run."""

    out: Path
    partition_by: str
    freq: Freq | None
    config: TrainConfig


def settings_parser() -> argparse.ArgumentParser:
    """The program arguments partition-job.yml may pass (the tests hold the YAML to these)."""
    parser = argparse.ArgumentParser(prog="partition_entry", add_help=False)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--partition-by", default=STORE)
    parser.add_argument("--freq", type=Freq, default=None)
    parser.add_argument("--horizon", type=int, default=None)
    parser.add_argument("--trials", type=int, default=TrainConfig.trials)
    parser.add_argument("--folds", type=int, default=TrainConfig.folds)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--name", default=TrainConfig.name)
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--search-rows", type=int, default=None)
    parser.add_argument(
        "--quantiles", type=quantiles_.parse_levels, default=TrainConfig.quantiles, help="levels, or 'none'"
    )
    return parser


def parse_settings(argv: Sequence[str]) -> PartitionSettings:
    """Program arguments of the parallel job; unknown ones (Azure ML adds its own) are ignored."""
    args, _ = settings_parser().parse_known_args(list(argv))
    config = TrainConfig(
        horizon=args.horizon,
        folds=args.folds,
        trials=args.trials,
        seed=args.seed,
        name=check_name(args.name),
        max_rows=args.max_rows,
        search_rows=args.search_rows,
        quantiles=args.quantiles,
    )
    return PartitionSettings(out=args.out, partition_by=args.partition_by, freq=args.freq, config=config)


def partition_value(frame: pd.DataFrame, column: str) -> str:
    """The one value of `column` in a mini-batch: a mini-batch must be exactly one partition."""
    if column not in frame.columns:
        raise ValueError(f"the mini-batch has no partition column {column!r}; it has {list(frame.columns)}")
    values = frame[column].astype(str).unique()
    if len(values) != 1:
        raise ValueError(
            f"a mini-batch must hold exactly one {column} partition, got {len(values)}: "
            "set the job's partition_keys to the same column as --partition-by"
        )
    return str(values[0])


def partition_model_name(name: str, value: str) -> str:
    """A valid model name (and folder) for one partition: `<name>-<value>`, lower-cased, with other
    characters as '-'; a short hash of the exact value is added whenever that changed it, so that two
    values never share a name (`CA_1` and `ca-1`)."""
    slug = _NOT_NAME.sub("-", value.lower()).strip("-")
    suffix = "" if slug == value else "-" + hashlib.sha256(value.encode()).hexdigest()[:8]
    head = f"{name}-{slug}"[: MAX_NAME - len(suffix)].rstrip("-")
    return check_name(head + suffix)


def train_partition(frame: pd.DataFrame, settings: PartitionSettings) -> dict[str, object]:
    """Train one partition's model into `<out>/<model name>` and return its summary row."""
    value = partition_value(frame, settings.partition_by)
    name = partition_model_name(settings.config.name, value)
    out = settings.out / name
    source = f"{settings.partition_by}={value}"
    row: dict[str, object] = {
        settings.partition_by: value,
        "model": name,
        "rows": len(frame),
        "series": None,
        "wape": None,
        "seasonal_naive_wape": None,
    }
    try:
        panel, report = build_panel(validate_sales(frame, source=source), settings.freq, source=source)
        row["series"] = panel.n_series
        train(panel, report, out, replace(settings.config, name=name), progress=lambda _: None)
    except GateError as exc:
        return {**row, **_holdout_wape(out), "status": "gate_failed", "message": str(exc)}
    except (DataError, NotEnoughDataError) as exc:
        return {**row, "status": "skipped", "message": str(exc)}
    return {**row, **_holdout_wape(out), "status": "trained", "message": ""}


def _holdout_wape(out: Path) -> dict[str, object]:
    """The holdout WAPEs of a trained partition, from the metrics.json every run writes."""
    metrics = json.loads((out / METRICS_FILE).read_text())
    return {"wape": metrics["model"]["wape"], "seasonal_naive_wape": metrics["seasonal_naive"]["wape"]}

"""The partitioned run's logic, and its Azure ML entry script run for real on two store partitions."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from retail_forecast.core.manifest import MANIFEST_FILE, MODEL_FILE, Manifest
from retail_forecast.core.schema import STORE, Freq
from retail_forecast.training.partition import (
    parse_settings,
    partition_model_name,
    partition_value,
    train_partition,
)
from retail_forecast.training.synth import synthesize

ENTRY_SCRIPT = Path(__file__).resolve().parents[2] / "training" / "aml" / "partition_entry.py"


def test_partition_value_is_the_one_value_of_the_column() -> None:
    frame = pd.DataFrame({"store_id": ["7", "7"], "category": ["food", "toys"]})
    assert partition_value(frame, "store_id") == "7"
    with pytest.raises(ValueError, match="exactly one category partition, got 2"):
        partition_value(frame, "category")
    with pytest.raises(ValueError, match="no partition column 'dept'"):
        partition_value(frame, "dept")


def test_partition_model_names_are_valid_and_never_collide() -> None:
    assert partition_model_name("demand", "12") == "demand-12"
    odd = partition_model_name("demand", "CA_1")
    assert re.fullmatch(r"demand-ca-1-[0-9a-f]{8}", odd)
    assert partition_model_name("demand", "ca-1") == "demand-ca-1"
    assert partition_model_name("demand", "CA 1") != odd
    long = partition_model_name("demand", "x" * 200)
    assert len(long) == 63
    assert partition_model_name("demand", "../../etc").startswith("demand-etc-")


def test_settings_ignore_arguments_azure_ml_adds(tmp_path: Path) -> None:
    settings = parse_settings(
        [
            "--out",
            str(tmp_path),
            "--partition-by",
            "category",
            "--horizon",
            "7",
            "--freq",
            "W",
            "--quantiles",
            "none",
            "--trials",
            "2",
            "--logging_level",
            "INFO",
        ]
    )
    assert settings.out == tmp_path
    assert settings.partition_by == "category"
    assert settings.freq is Freq.WEEKLY
    assert (settings.config.horizon, settings.config.trials, settings.config.quantiles) == (7, 2, ())
    assert parse_settings(["--out", str(tmp_path)]).partition_by == STORE
    with pytest.raises(ValueError, match="model name"):
        parse_settings(["--out", str(tmp_path), "--name", "Not A Name"])


def test_a_partition_too_short_to_train_is_a_skipped_row(tmp_path: Path) -> None:
    frame = synthesize(stores=1, items=2, periods=30, freq=Freq.DAILY, seed=1)
    settings = parse_settings(["--out", str(tmp_path), "--horizon", "14", "--quantiles", "none"])
    row = train_partition(frame, settings)
    assert row["status"] == "skipped"
    assert "too few" in str(row["message"])
    assert row["series"] == 2
    assert not (tmp_path / str(row["model"]) / MODEL_FILE).exists()


def load_entry_script() -> ModuleType:
    """The entry script as Azure ML loads it: by file path, not as a package module."""
    spec = importlib.util.spec_from_file_location("partition_entry", ENTRY_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_entry_script_trains_one_model_per_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sales = synthesize(stores=2, items=4, periods=200, freq=Freq.DAILY, seed=5)
    entry = load_entry_script()
    argv = [
        "partition_entry.py",
        "--out",
        str(tmp_path),
        "--partition-by",
        STORE,
        "--horizon",
        "14",
        "--trials",
        "1",
        "--quantiles",
        "none",
        "--max-rows",
        "20000",
        "--name",
        "demand",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    entry.init()
    summaries: list[Any] = [entry.run(part) for _, part in sales.groupby(STORE, sort=True)]
    summary = pd.concat(summaries, ignore_index=True)
    stores = sorted(sales[STORE].astype(str).unique())
    assert summary[STORE].tolist() == stores
    assert set(summary["status"]) <= {"trained", "gate_failed"}
    for row in summary.to_dict("records"):
        out = tmp_path / row["model"]
        metrics = json.loads((out / "metrics.json").read_text())
        assert row["wape"] == metrics["model"]["wape"]
        assert row["seasonal_naive_wape"] == metrics["seasonal_naive"]["wape"]
        assert row["series"] == 4
        if row["status"] == "trained":
            manifest = Manifest.load(out)
            assert manifest.name == row["model"]
            assert manifest.training_data.series == 4  # this store's items only
            assert (out / MODEL_FILE).exists()
        else:
            assert not (out / MANIFEST_FILE).exists()
    assert (summary["status"] == "trained").any()

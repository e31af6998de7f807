"""The training report and metrics.json of a real training run (conftest's `model_dir`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from retail_forecast.core.manifest import Manifest
from retail_forecast.training.metrics import VOLUME_BANDS
from retail_forecast.training.pipeline import METRICS_FILE
from retail_forecast.training.report import IMPORTANCE_PLOT_FILE, REPORT_FILE, TOP_FEATURES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def metrics(model_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model_dir / METRICS_FILE).read_text())
    return data


@pytest.fixture(scope="module")
def report(model_dir: Path) -> str:
    return (model_dir / REPORT_FILE).read_text()


def section(report: str, title: str) -> list[str]:
    """The lines of one `## title` section."""
    lines = report.splitlines()
    start = lines.index(f"## {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def table_rows(lines: list[str]) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    return rows[2:]  # header and alignment row


def test_backtest_lists_every_fold_for_model_and_baselines(metrics: dict[str, Any], report: str) -> None:
    folds = metrics["backtest"]
    search_folds = len(metrics["trials"][0]["fold_wape"])
    assert search_folds >= 1
    assert [f["holdout"] for f in folds] == [False] * search_folds + [True]
    assert folds[-1]["origin"] == metrics["holdout_origin"]
    assert sorted(f["origin"] for f in folds) == [f["origin"] for f in folds]
    for name in ("model", "seasonal_naive", "moving_average"):
        assert folds[-1][name] == metrics[name]  # the holdout row is the holdout's scores
    rows = table_rows(section(report, "Backtest"))
    assert len(rows) == 3 * len(folds)  # the model and two baselines per fold
    by_key = {(r[0], r[3]): r for r in rows}
    holdout_series = sum(band["series"] for band in metrics["volume_bands"])  # bands split the holdout's
    for fold in folds:
        row = by_key[(fold["origin"], "seasonal naive")]
        assert row[1] == ("holdout" if fold["holdout"] else "search")
        assert 0 < int(row[2]) <= holdout_series if not fold["holdout"] else int(row[2]) == holdout_series
        assert float(row[4]) == pytest.approx(fold["seasonal_naive"]["wape"], abs=5e-5)
        assert float(by_key[(fold["origin"], "model")][6]) == pytest.approx(fold["model"]["bias"], abs=5e-5)


def test_volume_bands_split_the_holdout(metrics: dict[str, Any], report: str, model_dir: Path) -> None:
    bands = metrics["volume_bands"]
    assert [b["band"] for b in bands] == list(VOLUME_BANDS)
    counts = [b["series"] for b in bands]
    assert max(counts) - min(counts) <= 1  # equal series counts
    assert sum(counts) <= Manifest.load(model_dir).training_data.series
    assert sum(b["volume_share"] for b in bands) == pytest.approx(1.0)
    assert bands[0]["mean_sales_max"] <= bands[1]["mean_sales_min"]
    assert bands[1]["mean_sales_max"] <= bands[2]["mean_sales_min"]
    assert bands[2]["volume_share"] > bands[0]["volume_share"]
    rows = table_rows(section(report, "Accuracy by sales volume"))
    assert [r[0] for r in rows] == list(VOLUME_BANDS)
    for row, band in zip(rows, bands, strict=True):
        assert float(row[4]) == pytest.approx(band["model"]["wape"], abs=5e-5)
        assert float(row[6]) == pytest.approx(band["seasonal_naive"]["wape"], abs=5e-5)


def test_feature_importances_use_the_manifest_feature_names(
    metrics: dict[str, Any], report: str, model_dir: Path
) -> None:
    manifest = Manifest.load(model_dir)
    importances = metrics["feature_importances"]
    assert importances["method"] == "gain"  # conftest trains the default learner, LightGBM
    features = importances["features"]
    assert list(features) == sorted(features, key=lambda n: -features[n])
    assert set(features) == set(manifest.features.names)
    assert sum(features.values()) == pytest.approx(1.0)
    rows = table_rows(section(report, "Feature importances"))
    assert [r[0] for r in rows] == list(features)[:TOP_FEATURES]
    assert (model_dir / IMPORTANCE_PLOT_FILE).read_bytes().startswith(PNG_SIGNATURE)
    assert f"]({IMPORTANCE_PLOT_FILE})" in report

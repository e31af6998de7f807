"""The `forecast` command end to end, as a data scientist runs it: real data files, real ONNX models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import onnxruntime as ort
import pytest
from azure.storage.blob import ContainerClient

from retail_forecast.cli import main
from retail_forecast.core.manifest import MANIFEST_FILE, MODEL_FILE, Manifest, sha256_file
from retail_forecast.core.schema import Freq
from retail_forecast.core.store import LIFECYCLE_TAG, open_store
from retail_forecast.training.synth import synthesize_to
from tests.core.test_store import write_model

REPO = Path(__file__).resolve().parents[1]
FAST = ["--trials", "2", "--max-rows", "40000"]
# For tests that check neither the search nor a quantile output: one trial, no quantile heads.
FAST_POINT = ["--trials", "1", "--max-rows", "40000", "--quantiles", "none"]


@pytest.fixture(scope="module")
def daily_sales(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sales.csv"
    synthesize_to(path, stores=3, items=8, periods=400, freq=Freq.DAILY, seed=3)
    return path


def check_model_folder(out: Path, freq: str, horizon: int, quantiles: tuple[str, ...] = ()) -> Manifest:
    manifest = Manifest.load(out)
    assert manifest.sha256 == sha256_file(out / "model.onnx")
    assert (manifest.freq, manifest.horizon) == (freq, horizon)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (tensor,) = session.get_inputs()
    assert tensor.shape[1] == len(manifest.features.names)
    replay = session.run(None, {tensor.name: np.asarray(manifest.golden.inputs, dtype=np.float32)})
    assert replay[0].tolist() == manifest.golden.outputs
    assert [o.name for o in session.get_outputs()] == ["forecast", *quantiles]
    golden = [q.golden for q in manifest.quantiles.outputs] if manifest.quantiles else []
    assert golden == [r.tolist() for r in replay[1:]]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gate"]["passed"] is True
    assert len(metrics["by_horizon"]["model"]) == horizon
    assert (out / "report.md").read_text().startswith("# Training report")
    assert (out / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ("## Quantile forecasts" in (out / "report.md").read_text()) == bool(quantiles)
    assert (out / "calibration.png").exists() == bool(quantiles)
    return manifest


@pytest.mark.slow
def test_train_daily_beats_seasonal_naive(
    daily_sales: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    code = main(["train", "--data", str(daily_sales), "--out", str(out), "--horizon", "14", *FAST])
    assert code == 0
    manifest = check_model_folder(out, "D", 14, ("q0.1", "q0.5", "q0.9"))
    model, naive = manifest.metrics["model"].wape, manifest.metrics["seasonal_naive"].wape
    assert model is not None and naive is not None
    assert model < 0.95 * naive
    assert manifest.quantiles is not None
    scores = json.loads((out / "metrics.json").read_text())["quantiles"]
    assert scores["scaled_pinball"] < 0.9 * scores["point_scaled_pinball"]  # the heads add information
    assert 0.6 < scores["coverage"] < 0.97 and len(scores["coverage_by_horizon"]) == 14
    assert 0 < scores["open_coverage"] <= scores["coverage"]
    assert list(scores["share_below"]) == list(scores["share_at_or_below"]) == ["0.1", "0.5", "0.9"]
    assert all(scores["share_below"][q] <= scores["share_at_or_below"][q] for q in scores["share_below"])
    assert "| share strictly below | share at or below | calibrated |" in (out / "report.md").read_text()
    printed = capsys.readouterr().out
    assert "| model |" in printed and "promotion gate passed" in printed


@pytest.mark.slow
def test_train_weekly_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "weekly.parquet"
    synthesize_to(data, stores=3, items=10, periods=130, freq=Freq.WEEKLY, seed=4)
    out = tmp_path / "model"
    assert main(["train", "--data", str(data), "--out", str(out), *FAST_POINT]) == 0
    manifest = check_model_folder(out, "W", Freq.WEEKLY.default_horizon)
    assert manifest.quantiles is None
    assert manifest.min_history <= 60


@pytest.mark.slow
def test_failed_gate_exits_non_zero_and_exports_nothing(
    daily_sales: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    args = ["train", "--data", str(daily_sales), "--out", str(out), "--horizon", "7", "--gate-margin", "0.99"]
    assert main([*args, *FAST_POINT]) == 3
    assert "promotion gate failed" in capsys.readouterr().err
    assert not (out / "model.onnx").exists() and not (out / "manifest.json").exists()
    assert "promotion gate failed" in (out / "report.md").read_text()


def test_bad_data_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("date,store_id,item_id,sales\n2024-01-01,s,i,oops\n")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "line 2, column 'sales'" in capsys.readouterr().err


def test_too_little_history_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "short.csv"
    synthesize_to(data, stores=1, items=2, periods=80, freq=Freq.DAILY, seed=1)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--horizon", "28"]) == 2
    assert "too few for horizon 28" in capsys.readouterr().err
    synthesize_to(data, stores=1, items=2, periods=56, freq=Freq.DAILY, seed=1)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "too few for horizon 28" in capsys.readouterr().err


@pytest.mark.slow
def test_default_horizon_shrinks_to_fit_short_data_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "short.csv"
    synthesize_to(data, stores=2, items=4, periods=140, freq=Freq.DAILY, seed=2)
    assert (
        main(["train", "--data", str(data), "--out", str(tmp_path / "o"), *FAST_POINT, "--gate-margin", "0"])
        == 0
    )
    assert "the default 28 needs 168 periods with 3 folds; the data has 140, so the horizon is 21" in (
        capsys.readouterr().err
    )
    assert Manifest.load(tmp_path / "o").horizon == 21


def test_invalid_model_name_is_refused(
    daily_sales: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(daily_sales), "--out", str(tmp_path), "--name", "Bad_Name"]) == 2
    assert "model name 'Bad_Name' is invalid" in capsys.readouterr().err


def test_publish_errors_exit_with_store_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["publish", str(tmp_path), "--store", f"file://{tmp_path / 'store'}", "--name", "demand"])
    assert code == 4
    assert "manifest.json" in capsys.readouterr().err


def test_operator_folder_never_shadows_the_standard_library() -> None:
    """From the repository root, where `operator/` is a folder, `python -m` still gets the stdlib module."""
    probe = (
        "import operator, retail_forecast.operator as ours; print(operator.__file__); print(ours.__file__)"
    )
    for command in (["-m", "pip", "--version"], ["-c", probe]):
        result = subprocess.run(
            [sys.executable, *command], cwd=REPO, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
    stdlib, ours = result.stdout.split()
    assert Path(stdlib).name == "operator.py" and str(REPO) not in stdlib
    assert Path(ours) == REPO / "operator" / "src" / "__init__.py"
    assert not (REPO / "operator" / "__init__.py").exists()


def test_training_never_overwrites_an_existing_model(
    daily_sales: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"older model")
    assert main(["train", "--data", str(daily_sales), "--out", str(tmp_path)]) == 2
    assert "already holds a model" in capsys.readouterr().err
    assert (tmp_path / "model.onnx").read_bytes() == b"older model"


def test_retire_retags_a_published_version_and_refuses_an_unknown_one(
    azure_store_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(azure_store_uri)
    for version in ("1", "2"):
        write_model(tmp_path / version, version.encode() * 8, version=version)
        store.publish(tmp_path / version, "demand")
    assert main(["retire", "--store", azure_store_uri, "--name", "demand", "--version", "1"]) == 0
    assert f"retired {azure_store_uri}/demand/1" in capsys.readouterr().out
    container = ContainerClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"], urlsplit(azure_store_uri).netloc
    )
    tags = {blob.name: blob.tags for blob in container.list_blobs(include=["tags"])}
    assert tags == {
        f"models/demand/{v}/{file}": {LIFECYCLE_TAG: "retired" if v == "1" else "servable"}
        for v in ("1", "2")
        for file in (MODEL_FILE, MANIFEST_FILE)
    }
    assert main(["retire", "--store", azure_store_uri, "--name", "demand", "--version", "3"]) == 4
    assert "demand/3 does not exist" in capsys.readouterr().err

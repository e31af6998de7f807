"""yamllint over every YAML file in the repository, and the shape of the Azure Pipelines definition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.infra.iac import REPO

PIPELINE = REPO / "azure-pipelines.yml"
STAGES = [
    "build",
    "test",
    "evaluate_live",
    "train",
    "gate",
    "publish_model",
    "images",
    "deploy",
    "verify",
    "endpoint",
    "promote",
]


def test_yamllint_clean() -> None:
    yamllint = Path(sys.executable).parent / "yamllint"
    result = subprocess.run(
        [str(yamllint), "--strict", "-f", "parsable", "-c", str(REPO / ".yamllint"), "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_sees_the_infra_yaml() -> None:
    """The config ignores vendored and generated trees, not the files this repository owns."""
    yamllint = Path(sys.executable).parent / "yamllint"
    listed = subprocess.run(
        [str(yamllint), "--list-files", "-c", str(REPO / ".yamllint"), "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    names = {Path(p).as_posix().removeprefix("./") for p in listed}
    assert {"azure-pipelines.yml", "infra/checkov.yaml"} <= names
    assert not any(n.startswith((".venv/", "node_modules/", "build/")) for n in names)


def load_pipeline() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(PIPELINE.read_text())
    return loaded


def tasks(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "task" in node:
            found.append(node)
        for value in node.values():
            found += tasks(value)
    elif isinstance(node, list):
        for value in node:
            found += tasks(value)
    return found


def test_pipeline_stages_in_order() -> None:
    assert [stage["stage"] for stage in load_pipeline()["stages"]] == STAGES


def test_azure_access_only_through_the_federated_service_connection() -> None:
    pipeline = load_pipeline()
    azure_tasks = [t for t in tasks(pipeline) if t["task"].startswith("AzureCLI@")]
    assert len(azure_tasks) >= 5
    for task in azure_tasks:
        assert task["task"] == "AzureCLI@2"
        assert task["inputs"]["azureSubscription"] == "$(azureServiceConnection)"
    text = PIPELINE.read_text()
    for secret_like in ("client_secret", "AZURE_CLIENT_SECRET", "AccountKey=", "password"):
        assert secret_like not in text, secret_like
    assert any("group" in v for v in pipeline["variables"] if isinstance(v, dict))


def test_pipeline_runs_the_readme_commands() -> None:
    text = PIPELINE.read_text()
    assert "make test" in text
    assert "az ml job create -f training/aml/train-job.yml" in text
    assert '"gate", {}).get("passed")' in text
    assert "forecast publish" in text and "--store azureblob://models" in text
    assert "Dockerfile.inference" in text and "Dockerfile.operator" in text
    assert "helm upgrade --install forecast-operator charts/forecast-operator" in text
    assert "kind: ForecastModel" in text
    assert "--for=condition=Ready" in text and "Degraded" in text

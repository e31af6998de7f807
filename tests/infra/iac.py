"""Loaders shared by the infra tests: Terraform (HCL2), Bicep (pycep) and checkov runs, all offline."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, cast

from hcl2.api import load as load_hcl  # checkov's bc-python-hcl2: values in one-element lists
from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TERRAFORM = INFRA / "terraform"
BICEP = INFRA / "bicep"
AML_ENDPOINT = INFRA / "aml-endpoint"
# Every Bicep file: the platform, and the autoscale setting the pipeline deploys for the managed endpoint.
BICEP_FILES = (BICEP / "main.bicep", AML_ENDPOINT / "autoscale.bicep")
KQL = INFRA / "monitor" / "kql"
CHECKOV_CONFIG = INFRA / "checkov.yaml"
DOCKERFILES = ("Dockerfile.inference", "Dockerfile.operator", "infra/aml-endpoint/Dockerfile")


def unwrap(value: Any) -> Any:
    """bc-python-hcl2 wraps every attribute and block in a list; take single values out, recursively."""
    if isinstance(value, list) and len(value) == 1:
        return unwrap(value[0])
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def terraform_blocks() -> dict[str, list[dict[str, Any]]]:
    """Every top-level block of every .tf file: {"resource": [...], "variable": [...], ...}."""
    blocks: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            parsed: dict[str, list[dict[str, Any]]] = load_hcl(handle)
        for kind, entries in parsed.items():
            blocks.setdefault(kind, []).extend(entries)
    return blocks


def terraform_resources() -> dict[str, dict[str, Any]]:
    """{"azurerm_storage_account.models": {attributes…}} with single values unwrapped."""
    resources: dict[str, dict[str, Any]] = {}
    for entry in terraform_blocks().get("resource", []):
        for rtype, named in entry.items():
            for name, body in named.items():
                resources[f"{rtype}.{name}"] = unwrap(body)
    return resources


def terraform_names(kind: str) -> set[str]:
    """Names of the `variable` or `output` blocks."""
    return {name for entry in terraform_blocks().get(kind, []) for name in entry}


def bicep_template(path: Path = BICEP / "main.bicep") -> dict[str, Any]:
    return cast(dict[str, Any], BicepParser().parse(file_path=path))


def bicep_resources_of_type(template: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource["config"]
        for name, resource in template["resources"].items()
        if resource["type"].lower() == rtype.lower()
    }


def run_checkov(*targets: str) -> tuple[list[dict[str, Any]], str]:
    """Run checkov (offline, the repository's one config file) and return its JSON reports and stderr."""
    # checkov pins its own dependencies tightly (e.g. packaging<24), so it lives in a venv of its own
    # (`make tools`), not in the project's; CHECKOV names another install.
    checkov = Path(os.environ.get("CHECKOV", REPO / ".tools" / "checkov" / "bin" / "checkov"))
    assert checkov.exists(), f"checkov not found at {checkov}: run `make tools` (make test does)"
    command = [str(checkov), "--config-file", str(CHECKOV_CONFIG), "--skip-download", "-o", "json", *targets]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.stdout.strip(), f"checkov printed no report:\n{result.stderr[-3000:]}"
    reports = json.loads(result.stdout)
    return (reports if isinstance(reports, list) else [reports]), result.stderr

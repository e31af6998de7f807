"""The forecast-operator chart, rendered offline with helm-python-sdk (Helm's own Go library, no cluster),
as `forecast demo-cluster` renders it."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Final

import yaml

from retail_forecast.demo_cluster import chart_crds, chart_objects, render_chart_files

ROOT: Final = Path(__file__).resolve().parents[2]
CHART: Final = ROOT / "charts" / "forecast-operator"
K8S: Final = ROOT / "k8s"
RELEASE: Final = "forecast-operator"
NAMESPACE: Final = "forecast-system"
PEERING: Final = "forecast-operator"

Obj = dict[str, Any]


@functools.cache
def _render(values_json: str) -> tuple[dict[str, str], tuple[Obj, ...]]:
    files = render_chart_files(CHART, json.loads(values_json), release=RELEASE, namespace=NAMESPACE)
    return files, tuple(chart_objects(files))


def render(values: Obj | None = None) -> list[Obj]:
    """Rendered objects; copies, so a test cannot change another's."""
    return copy.deepcopy(list(_render(json.dumps(values or {}, sort_keys=True))[1]))


def notes(values: Obj | None = None) -> str:
    files = _render(json.dumps(values or {}, sort_keys=True))[0]
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def load_yaml(path: Path) -> list[Obj]:
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def crd_objects() -> list[Obj]:
    """The chart's CRDs (crds/: the ForecastModel and kopf's peering kinds), as `forecast demo-cluster`
    applies them."""
    return chart_crds(CHART)


def rule_table(role: Obj) -> dict[tuple[str, str, str], frozenset[str]]:
    """(apiGroup, resource, resourceName or "" for any) -> verbs, over a Role's or ClusterRole's rules."""
    table: dict[tuple[str, str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, "discovery is allowed to every authenticated user already"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames") or [""]:
                    table.setdefault((group, resource, name), set()).update(rule["verbs"])
    return {k: frozenset(v) for k, v in table.items()}


# The chart objects that give the operator its identity; a test or benchmark runs the operator itself as
# a process (tests/operator/process.py) in place of the chart's Deployment.
IDENTITY_KINDS: Final = frozenset(
    {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ClusterKopfPeering",
        "KopfPeering",
    }
)


def operator_identity(values: Obj | None = None) -> list[Obj]:
    """The ServiceAccount, RBAC and peering objects the chart renders for `values`."""
    return [o for o in render(values) if o["kind"] in IDENTITY_KINDS]


def operator_args(values: Obj | None = None) -> list[str]:
    """The operator container's arguments without `--liveness` (a process picks its own loopback port)."""
    deployment = next(o for o in render(values) if o["kind"] == "Deployment")
    args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    liveness = args.index("--liveness")
    del args[liveness : liveness + 2]
    return args

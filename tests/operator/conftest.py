"""Operator test fixtures: a tiny real model published to Azurite for the operator to verify, and
`forecast operator` as a process on the real control plane (`control_plane`, tests/conftest.py) in a
fresh namespace, as its own ServiceAccount so the audit log tells its requests from the test's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from retail_forecast.core.data import build_panel, validate_sales
from retail_forecast.core.schema import Freq
from retail_forecast.core.store import open_store
from retail_forecast.operator import resources as res
from retail_forecast.training.pipeline import TrainConfig, train
from retail_forecast.training.synth import synthesize
from tests.azurite import Azurite
from tests.charts.chart import crd_objects
from tests.controlplane import Client, ControlPlane, apply_crds, create_namespace, wait_until
from tests.operator.process import OperatorProcess
from tests.outcomes import failed_in

FM_API: Final = f"{res.GROUP}/{res.VERSION}"
MERGE: Final = "application/merge-patch+json"
OPERATOR_SA: Final = "operator"
RBAC_GROUP: Final = "rbac.authorization.k8s.io"
NAMESPACE_PREFIX: Final = "own-"  # the `namespace` fixture's


@dataclass(frozen=True)
class Store:
    uri: str
    sha: dict[str, str]
    connection_string: str


def publish_model(connection_string: str, out: Path) -> Store:
    """Train one tiny real model in `out` and publish it as versions "1" and "2" to a fresh Azurite
    container (a couple of seconds; also used by benchmarks/operator.py)."""
    frame = validate_sales(synthesize(stores=2, items=6, periods=240, freq=Freq.DAILY, seed=11))
    panel, report = build_panel(frame, Freq.DAILY)
    # Small on purpose, and without quantile heads: the operator reads the manifest, it never runs the model.
    config = TrainConfig(
        horizon=14,
        folds=2,
        trials=1,
        max_rows=5_000,
        search_rows=3_000,
        name="demand",
        version="1",
        fixed_params={"max_iter": 30},
        quantiles=(),
    )
    train(panel, report, out, config, progress=lambda _: None)
    uri = f"azureblob://ops-{uuid.uuid4().hex[:20]}/models"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string)
        env.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
        published = open_store(uri)
        sha = {version: published.publish(out, "demand", version).sha256 for version in ("1", "2")}
    return Store(uri, sha, connection_string)


@pytest.fixture(scope="session")
def store(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The tiny real model of `publish_model`, once per session."""
    return publish_model(azurite.connection_string, tmp_path_factory.mktemp("operator-model"))


def namespace_for_the_operator(client: Client, name: str, binding: dict[str, Any], role: str) -> None:
    """The CRDs, namespace `name`, and in it the operator's ServiceAccount, given ClusterRole `role` by
    `binding` (a RoleBinding or a ClusterRoleBinding: its kind and metadata)."""
    apply_crds(client, crd_objects())
    create_namespace(client, name)
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": OPERATOR_SA, "namespace": name},
    }
    granted = {
        "apiVersion": f"{RBAC_GROUP}/v1",
        **binding,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": name}],
    }
    client.apply([account, granted])


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace, the CRDs, and a ServiceAccount for the operator with the cluster-admin role
    (RBAC itself is test_chart_rbac.py's subject)."""
    name = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}"
    with control_plane.admin() as client:
        binding = {"kind": "ClusterRoleBinding", "metadata": {"name": f"{name}-operator"}}
        namespace_for_the_operator(client, name, binding, "cluster-admin")
    yield name
    with control_plane.admin() as client:
        client.resource("v1", "Namespace").delete(name=name)
        client.resource(f"{RBAC_GROUP}/v1", "ClusterRoleBinding").delete(name=f"{name}-operator")
    # Not waited for here (about 5 s each: the namespace controller looks again 5 s after a pass that left
    # content): operators watching one namespace never see it, one watching all waits `namespaces_gone`.


def namespaces_gone(client: Client) -> None:
    """Wait until the `namespace` fixture's namespaces are deleted: an operator watching all namespaces
    must not find the objects of earlier tests."""

    def gone() -> bool:
        return not any(
            ns["metadata"]["name"].startswith(NAMESPACE_PREFIX) for ns in client.list("v1", "Namespace")
        )

    wait_until(gone, timeout=120, what="the earlier tests' namespaces deleted")


@dataclass(frozen=True)
class Operator:
    process: OperatorProcess
    user: str  # its name in the audit log

    def log(self) -> list[dict[str, Any]]:
        """Its log so far: one JSON object a line (kopf's JSON formatter); a line that is not fails."""
        return [json.loads(line) for line in self.process.output().splitlines() if line.strip()]


def operator_process(
    control_plane: ControlPlane, namespace: str, store_connection_string: str, folder: Path
) -> OperatorProcess:
    """`forecast operator --namespace NS` as the ServiceAccount, with these store credentials; not started."""
    kubeconfig = control_plane.token_kubeconfig(folder / "kubeconfig", namespace, OPERATOR_SA)
    return OperatorProcess(
        ["operator", "--namespace", namespace],
        {"KUBECONFIG": str(kubeconfig), "AZURE_STORAGE_CONNECTION_STRING": store_connection_string},
        folder / "operator.log",
    )


@pytest.fixture
def operator(
    control_plane: ControlPlane, namespace: str, store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    """`forecast operator --namespace NS` as the ServiceAccount, started; its log is printed when the test
    failed (under "Captured stdout teardown")."""
    process = operator_process(control_plane, namespace, store.connection_string, tmp_path)
    process.start()
    try:
        yield Operator(process, f"system:serviceaccount:{namespace}:{OPERATOR_SA}")
    finally:
        code = process.stop()
        if failed_in(request):
            print(process.output())
        assert code in {0, None}, process.output()


def create_scorer_account(client: Client, namespace: str) -> None:
    """ServiceAccount `scorer`, the pods' identity when `serving.serviceAccountName` names it: without
    it the ReplicaSet creates no pod."""
    client.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "scorer", "namespace": namespace},
            }
        ]
    )


def forecast_model(
    store: Store,
    *,
    serving: dict[str, Any] | None = None,
    autoscaling: dict[str, Any] | None = None,
    rollout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ForecastModel `demand` serving version 1 of the store's model; each section's keys override."""
    return {
        "apiVersion": FM_API,
        "kind": res.KIND,
        "metadata": {"name": "demand"},
        "spec": {
            "model": {"name": "demand", "version": "1", "storeUri": store.uri},
            "serving": {"image": "registry.local/inference:1", **(serving or {})},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4, **(autoscaling or {})},
            "rollout": {
                "progressDeadlineSeconds": 600,
                "scaleDownDelaySeconds": 0,
                "autoPromote": True,
                **(rollout or {}),
            },
        },
    }


class Cluster:
    """What a user sees of ForecastModel `demand` and its children in one namespace."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def read(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        return self.client.read(api_version, kind, name, self.namespace)

    def deployment(self, name: str) -> dict[str, Any]:
        return self.read("apps/v1", "Deployment", name) or {}

    def pod_spec(self, name: str) -> dict[str, Any]:
        return dict(self.deployment(name).get("spec", {}).get("template", {}).get("spec", {}))

    def replicas(self, name: str) -> int | None:
        found = self.deployment(name).get("spec", {}).get("replicas")
        return None if found is None else int(found)

    def selected(self, service: str) -> str | None:
        found = self.read("v1", "Service", service)
        return None if found is None else str(found["spec"]["selector"][res.LABEL_COLOR])

    def hpa_target(self) -> str | None:
        found = self.read("autoscaling/v2", "HorizontalPodAutoscaler", "demand")
        return None if found is None else str(found["spec"]["scaleTargetRef"]["name"])

    def condition(self, kind: str) -> tuple[str, str] | None:
        found = self.read(FM_API, res.KIND, "demand") or {}
        for cond in (found.get("status") or {}).get("conditions", []):
            if cond["type"] == kind:
                return str(cond["status"]), str(cond["reason"])
        return None

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.client.resource(FM_API, res.KIND).patch(
            body={"spec": spec}, name="demand", namespace=self.namespace, content_type=MERGE
        )

"""The operator owns its children completely, on a real control plane (tests/controlplane.py).

`forecast operator` runs as its own ServiceAccount (so the audit log tells its requests from the test's),
the model store on Azurite; the test plays the kubelet. One ForecastModel goes through what a merge patch
could not do: fields removed from the spec leave the pod template, a manual edit is taken back, an
upgrade moves the Service and the HPA before the old colour is scaled down and then deletes the preview
Service, autoscaling off deletes the HPA, `replicas: 0` parks the model, and delete leaves the children
to the garbage collector.
"""

from __future__ import annotations

from typing import Any

import pytest

from retail_forecast.operator import resources as res
from tests.controlplane import AuditEntry, ControlPlane, make_deployment_available, wait_until
from tests.operator.conftest import FM_API, Cluster, Operator, Store, create_scorer_account, forecast_model

pytestmark = pytest.mark.timeout(300)


def demand(store: Store) -> dict[str, Any]:
    scorer = {"serviceAccountName": "scorer", "env": [{"name": "FORECAST_LOG_LEVEL", "value": "debug"}]}
    return forecast_model(store, serving=scorer)


def writes(entries: list[AuditEntry]) -> list[tuple[str, str]]:
    return [(e.resource, e.name) for e in entries if e.verb in {"create", "patch", "update", "delete"}]


def test_the_operator_owns_its_children_completely(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        create_scorer_account(client, namespace)
        client.resource(FM_API, res.KIND).create(body=demand(store), namespace=namespace)
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-blue"), what="demand-blue")
        make_deployment_available(client, namespace, "demand-blue")
        wait_until(lambda: cluster.condition("Ready") == ("True", "Available"), what="Ready")
        assert cluster.hpa_target() == "demand-blue"
        assert cluster.pod_spec("demand-blue")["serviceAccountName"] == "scorer"

        # Fields removed from the spec leave the pod template (a merge patch left them there).
        cluster.patch_spec({"serving": {"serviceAccountName": None, "env": None}})

        def removed() -> bool:
            pod = cluster.pod_spec("demand-blue")
            return pod["serviceAccountName"] == "default" and all("env" not in c for c in pod["containers"])

        wait_until(
            removed, what=f"scorer and env gone from the pod template: {cluster.deployment('demand-blue')}"
        )

        # A manual edit of a field the operator sets is taken back.
        edit = {
            "spec": {"template": {"spec": {"containers": [{"name": "serve", "image": "someone/else:9"}]}}}
        }
        client.resource("apps/v1", "Deployment").patch(
            body=edit,
            name="demand-blue",
            namespace=namespace,
            content_type="application/strategic-merge-patch+json",
        )
        wait_until(
            lambda: cluster.pod_spec("demand-blue")["containers"][0]["image"] == "registry.local/inference:1",
            what="the manual image edit reverted",
        )
        make_deployment_available(client, namespace, "demand-blue")

        # An upgrade: the Service and the HPA move to green before blue is scaled down; then the
        # preview Service goes.
        before = len(control_plane.audit(operator.user))
        cluster.patch_spec({"model": {"version": "2"}})
        wait_until(lambda: cluster.selected("demand-preview") == "green", what="the preview Service")
        make_deployment_available(client, namespace, "demand-green")
        wait_until(lambda: cluster.replicas("demand-blue") == 0, what="blue scaled down")
        wait_until(lambda: cluster.read("v1", "Service", "demand-preview") is None, what="preview deleted")
        assert (cluster.selected("demand"), cluster.hpa_target()) == ("green", "demand-green")
        order = writes(control_plane.audit(operator.user)[before:])
        scale_down = next(i for i, w in enumerate(order) if w == ("deployments", "demand-blue"))
        assert ("services", "demand") in order[:scale_down], order
        assert ("horizontalpodautoscalers", "demand") in order[:scale_down], order
        # The HPA took over green's count at its preview size: not reset to the default of 1.
        assert cluster.replicas("demand-green") == 2

        # Autoscaling off: the HPA is deleted and the fixed count applies.
        cluster.patch_spec({"autoscaling": {"enabled": False}, "serving": {"replicas": 3}})
        wait_until(lambda: cluster.hpa_target() is None, what="the HPA deleted")
        wait_until(lambda: cluster.replicas("demand-green") == 3, what="green at 3 replicas")

        # replicas 0 parks the model.
        cluster.patch_spec({"serving": {"replicas": 0}})
        wait_until(lambda: cluster.replicas("demand-green") == 0, what="green parked")
        wait_until(lambda: cluster.condition("Ready") == ("False", "Parked"), what="Ready=False Parked")

        client.resource(FM_API, res.KIND).delete(name="demand", namespace=namespace)
        wait_until(lambda: not client.list("apps/v1", "Deployment", namespace), what="Deployments collected")
        wait_until(
            lambda: (
                not [s for s in client.list("v1", "Service", namespace) if s["metadata"]["name"] == "demand"]
            ),
            what="Service collected",
        )
    denied = [e for e in control_plane.audit(operator.user) if e.code == 403]
    assert denied == []

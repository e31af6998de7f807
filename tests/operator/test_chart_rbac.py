"""The chart's RBAC against the calls the operator really makes, on a real API server.

`forecast operator`, with the arguments the chart gives it, runs as the chart's ServiceAccount (a
TokenRequest token in a kubeconfig) under the chart's rendered RBAC and peering objects, the model store
on Azurite. A ForecastModel goes create → Ready (the test plays the kubelet) → upgrade → promotion →
autoscaling off → a batch run → delete. The API server's audit log then answers two questions: was any request
denied, and is the set of (apiGroup, resource[/subresource], verb) the operator used exactly what the
chart grants — every grant used, nothing used that is not granted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import pytest

from retail_forecast.operator import resources as res
from retail_forecast.operator.reconcile import PROMOTE_ANNOTATION
from tests.charts.chart import NAMESPACE, crd_objects, operator_args, operator_identity, rule_table
from tests.controlplane import (
    AuditEntry,
    Client,
    ControlPlane,
    apply_crds,
    create_namespace,
    make_deployment_available,
    wait_until,
)
from tests.operator.conftest import Store, namespaces_gone
from tests.operator.process import OperatorProcess
from tests.operator.runs import finish_run, run_from_the_cronjob, summary_of

pytestmark = pytest.mark.timeout(300)

FM_API: Final = f"{res.GROUP}/{res.VERSION}"
# Checked by admission, not called: with OwnerReferencesPermissionEnforcement (on in tests/controlplane.py,
# as on OpenShift) every child the operator creates with `blockOwnerDeletion: true` needs this grant, and
# without it that create is denied (403), which the test would see.
# Server-side apply is a patch in the audit log; where it creates the object, the API server also
# authorizes it as create (without that grant the patch is denied, 403).
CHECKED_BY_ADMISSION: Final = {
    (res.GROUP, "forecastmodels/finalizers", "update"),
    ("apps", "deployments", "create"),
    ("", "services", "create"),
    ("autoscaling", "horizontalpodautoscalers", "create"),
    ("batch", "cronjobs", "create"),
}
SCENARIOS: Final = {
    "all-namespaces": {},
    "listed-namespaces": {"watchNamespaces": ["rbac-listed"]},
}


def forecast_model(namespace: str, store: Store) -> dict[str, Any]:
    return {
        "apiVersion": FM_API,
        "kind": res.KIND,
        "metadata": {"name": "demand", "namespace": namespace},
        "spec": {
            "model": {"name": "demand", "version": "1", "storeUri": store.uri},
            "serving": {"image": "registry.local/inference:1"},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4},
            "rollout": {"progressDeadlineSeconds": 600, "scaleDownDelaySeconds": 1, "autoPromote": False},
            "batch": {
                "schedule": "0 2 * * *",
                "input": "/data/sales.parquet",
                "output": "azureblob://runs/demand",
            },
        },
    }


def status(client: Client, namespace: str) -> dict[str, Any]:
    found = client.read(FM_API, res.KIND, "demand", namespace) or {}
    return dict(found.get("status") or {})


def ready(client: Client, namespace: str) -> bool:
    conditions = status(client, namespace).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def selected_color(client: Client, namespace: str) -> str | None:
    service = client.read("v1", "Service", "demand", namespace)
    return None if service is None else str(service["spec"]["selector"][res.LABEL_COLOR])


def replicas(client: Client, namespace: str, name: str) -> int | None:
    found = client.read("apps/v1", "Deployment", name, namespace)
    return None if found is None else int(found["spec"]["replicas"])


def drive_a_rollout(client: Client, namespace: str, store: Store) -> None:
    """create → Ready → upgrade → promotion → autoscaling off → a batch run → batch off → delete, each
    step waited for as a user would see it."""
    fms = client.resource(FM_API, res.KIND)
    fms.create(body=forecast_model(namespace, store), namespace=namespace)
    wait_until(lambda: client.read("apps/v1", "Deployment", "demand-blue", namespace), what="demand-blue")
    make_deployment_available(client, namespace, "demand-blue")
    wait_until(lambda: ready(client, namespace), what="Ready")
    assert status(client, namespace)["activeVersion"] == "1"

    patch = {"spec": {"model": {"version": "2"}}}
    fms.patch(body=patch, name="demand", namespace=namespace, content_type="application/merge-patch+json")
    wait_until(lambda: client.read("apps/v1", "Deployment", "demand-green", namespace), what="demand-green")
    make_deployment_available(client, namespace, "demand-green")
    wait_until(lambda: status(client, namespace).get("previewVersion") == "2", what="preview of 2")
    assert selected_color(client, namespace) == "blue"  # autoPromote: false waits for the annotation

    promote = {"metadata": {"annotations": {PROMOTE_ANNOTATION: "2"}}}
    fms.patch(body=promote, name="demand", namespace=namespace, content_type="application/merge-patch+json")
    wait_until(lambda: selected_color(client, namespace) == "green", what="Service → green")
    wait_until(lambda: status(client, namespace).get("activeVersion") == "2", what="activeVersion 2")
    wait_until(lambda: replicas(client, namespace, "demand-blue") == 0, what="blue scaled to zero")
    wait_until(lambda: client.read("v1", "Service", "demand-preview", namespace) is None, what="no preview")

    autoscaling_off = {"spec": {"autoscaling": {"enabled": False}}}
    fms.patch(
        body=autoscaling_off, name="demand", namespace=namespace, content_type="application/merge-patch+json"
    )
    hpa = ("autoscaling/v2", "HorizontalPodAutoscaler", "demand", namespace)
    wait_until(lambda: client.read(*hpa) is None, what="the HPA deleted")
    cronjob = ("batch/v1", "CronJob", res.cronjob_name("demand"), namespace)
    assert client.read(*cronjob) is not None
    # A batch run: the operator reads its pod's summary for status.batch.
    run_from_the_cronjob(client, namespace, "demand-batch-manual-1")
    summary = summary_of(client, namespace, "demand-batch-manual-1", rows=84)
    finish_run(client, namespace, "demand-batch-manual-1", "Succeeded", summary)
    wait_until(lambda: status(client, namespace).get("batch", {}).get("rows") == 84, what="the run's rows")
    no_batch = {"spec": {"batch": None}}
    fms.patch(body=no_batch, name="demand", namespace=namespace, content_type="application/merge-patch+json")
    wait_until(lambda: client.read(*cronjob) is None, what="the CronJob deleted")

    fms.delete(name="demand", namespace=namespace)
    # The garbage collector follows the owner references; the operator then finds nothing to do. The
    # collector learns a new CRD from discovery every 30 s and backs off on owners of a kind it does not
    # know yet, so right after the CRD was applied this may take a minute or more.
    wait_until(
        lambda: not client.list("apps/v1", "Deployment", namespace),
        timeout=180,
        what="Deployments collected",
    )


def used_and_denied(entries: list[AuditEntry]) -> tuple[set[tuple[str, str, str]], list[AuditEntry]]:
    used = {(e.group, e.resource, e.verb) for e in entries if e.resource}  # "": discovery, /version
    return used, [e for e in entries if e.code == 403]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_chart_grants_exactly_what_the_operator_uses(
    scenario: str, control_plane: ControlPlane, store: Store, tmp_path: Path
) -> None:
    name = f"rbac-{scenario.split('-', maxsplit=1)[0]}"
    values: dict[str, Any] = {"fullnameOverride": name, "peering": {"name": name}, **SCENARIOS[scenario]}
    namespace = str(values.get("watchNamespaces", [name])[0])
    objects = operator_identity(values)
    args = operator_args(values)

    with control_plane.admin() as admin:
        apply_crds(admin, crd_objects())
        if admin.read("v1", "Namespace", NAMESPACE) is None:
            create_namespace(admin, NAMESPACE)
        create_namespace(admin, namespace)
        admin.apply(objects)
        if "watchNamespaces" not in values:
            namespaces_gone(admin)
        kubeconfig = control_plane.token_kubeconfig(tmp_path / "kubeconfig", NAMESPACE, name)
        user = f"system:serviceaccount:{NAMESPACE}:{name}"
        operator = OperatorProcess(
            args,
            {
                "KUBECONFIG": str(kubeconfig),
                "POD_ID": f"{name}-0",
                "AZURE_STORAGE_CONNECTION_STRING": store.connection_string,
            },
            tmp_path / "operator.log",
        )
        operator.start()
        try:
            drive_a_rollout(admin, namespace, store)
            # After the delete, the Deployments' DELETED events make the operator look once more.
            wait_until(
                lambda: any(
                    e.verb == "get" and e.resource == "forecastmodels" and e.code == 404
                    for e in control_plane.audit(user)
                ),
                what="the operator's look after the delete",
            )
        except AssertionError as exc:
            denied = used_and_denied(control_plane.audit(user))[1]
            raise AssertionError(
                f"{exc}\ndenied: {denied}\nthe operator's log:\n{operator.output()}"
            ) from None
        finally:
            exit_code = operator.stop()
    assert exit_code == 0, operator.output()

    used, denied = used_and_denied(control_plane.audit(user))
    assert denied == [], "denied requests; the operator's log:\n" + operator.output()
    granted = {
        (group, resource, verb)
        for role in objects
        if role["kind"] in {"ClusterRole", "Role"}
        for (group, resource, _), verbs in rule_table(role).items()
        for verb in verbs
    }
    used |= CHECKED_BY_ADMISSION
    assert sorted(granted - used) == [], "granted, never used: least privilege says drop them"
    assert sorted(used - granted) == [], "used, never granted"

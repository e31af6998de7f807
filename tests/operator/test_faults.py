"""Failures on a real API server (tests/operator/faults.py's admission webhook refuses the operator's
writes) and a real store (Azurite stopped, or a wrong key): a permanent failure is shown once and heals
or is retried slowly; throttling, server errors, timeouts and a store outage are retried without a
failure condition; `Ready` holds while the HPA adds pods; the log says what happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retail_forecast.operator import resources as res
from tests.azurite import ACCOUNT_KEY, Azurite
from tests.controlplane import ControlPlane, make_deployment_available, wait_until
from tests.operator.conftest import (
    FM_API,
    MERGE,
    Cluster,
    Operator,
    Store,
    forecast_model,
    operator_process,
)
from tests.operator.faults import TIMEOUT_SECONDS, AdmissionFaults
from tests.operator.process import OperatorProcess

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def faults(
    control_plane: ControlPlane, namespace: str, operator: Operator, tmp_path: Path
) -> Iterator[AdmissionFaults]:
    with AdmissionFaults(tmp_path, operator.user) as server, control_plane.admin() as client:
        server.register(client, namespace)
        try:
            yield server
        finally:
            server.unregister(client, namespace)


@contextlib.contextmanager
def print_log_on_failure(process: OperatorProcess) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(process.output())
        raise


def failures(operator: Operator) -> list[dict[str, Any]]:
    return [line["failure"] for line in operator.log() if "failure" in line]


def warnings(cluster: Cluster) -> list[dict[str, Any]]:
    """Warning Events the operator posted about the ForecastModel. The HPA controller's own Warnings
    (this control plane has no metrics API: FailedGetResourceMetric, once its 15 s sync gets to the HPA)
    are the cluster's, not something the operator showed."""
    return [
        e
        for e in cluster.client.list("v1", "Event", cluster.namespace)
        if e["type"] == "Warning" and e["involvedObject"]["kind"] == res.KIND
    ]


def reconciled(cluster: Cluster) -> dict[str, Any]:
    found = cluster.read(FM_API, res.KIND, "demand") or {}
    conditions = {c["type"]: c for c in (found.get("status") or {}).get("conditions", [])}
    return dict(conditions.get("Reconciled") or {})


def test_a_refused_write_is_shown_once_and_heals_when_the_server_relents(
    control_plane: ControlPlane, namespace: str, operator: Operator, faults: AdmissionFaults, store: Store
) -> None:
    faults.fail(2, 422, "images must come from registry.example")
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        client.resource(FM_API, res.KIND).create(body=forecast_model(store), namespace=namespace)
        wait_until(lambda: reconciled(cluster).get("status") == "False", what="Reconciled=False")
        shown = reconciled(cluster)
        assert shown["reason"] == "Invalid"
        assert "apply deployments/demand-blue: 422" in shown["message"]
        assert "images must come from registry.example" in shown["message"]
        # Retried slowly (10 s, then 20 s): the second refusal changes nothing, the third write passes.
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-blue"), timeout=90, what="healed")
        make_deployment_available(client, namespace, "demand-blue")
        wait_until(lambda: reconciled(cluster).get("reason") == "Applied", what="Reconciled=True")
        wait_until(lambda: cluster.condition("Ready") == ("True", "Available"), what="Ready")
        assert faults.refused == 2
        assert [(e["reason"], e["count"] if e.get("count") else 1) for e in warnings(cluster)] == [
            ("Invalid", 1)
        ]
        seen = failures(operator)
        assert [(f["reason"], f["transient"], f["attempt"]) for f in seen] == [
            ("Invalid", False, 1),
            ("Invalid", False, 2),
        ]
        assert seen[1]["retryInSeconds"] > seen[0]["retryInSeconds"]
        # Server-side apply is a patch, also for a child that does not exist: no create, no AlreadyExists.
        children = {"deployments", "services", "horizontalpodautoscalers"}
        verbs = {e.verb for e in control_plane.audit(operator.user) if e.resource in children}
        assert verbs <= {"get", "list", "watch", "patch", "delete"}, verbs
        assert "patch" in verbs


@pytest.mark.parametrize("fault", ["429", "500", "timeout"])
def test_throttling_server_errors_and_timeouts_are_retried_and_never_shown(
    fault: str,
    control_plane: ControlPlane,
    namespace: str,
    operator: Operator,
    faults: AdmissionFaults,
    store: Store,
) -> None:
    if fault == "timeout":  # the webhook hangs: the API server answers with its own timeout error
        faults.fail(2, 500, sleep=TIMEOUT_SECONDS + 1)
    else:
        faults.fail(2, int(fault))
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        client.resource(FM_API, res.KIND).create(body=forecast_model(store), namespace=namespace)
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-blue"), timeout=60, what="created")
        make_deployment_available(client, namespace, "demand-blue")
        wait_until(lambda: cluster.condition("Ready") == ("True", "Available"), what="Ready")
        assert reconciled(cluster)["reason"] == "Applied"
        assert faults.refused == 2
        assert warnings(cluster) == []  # a failure condition would have come with a Warning Event
        reason = {"429": "TooManyRequests", "500": "InternalError", "timeout": "InternalError"}[fault]
        seen = [line for line in operator.log() if "failure" in line]
        assert [(f["failure"]["reason"], f["failure"]["shown"]) for f in seen] == [(reason, False)] * 2
        if fault == "timeout":  # the API server's own error: it stopped waiting for the webhook
            assert all("context deadline exceeded" in line["message"] for line in seen), seen


def test_ready_holds_while_the_hpa_scales_up(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        spec = forecast_model(store, autoscaling={"maxReplicas": 6})
        client.resource(FM_API, res.KIND).create(body=spec, namespace=namespace)
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-blue"), what="demand-blue")
        make_deployment_available(client, namespace, "demand-blue")
        wait_until(lambda: cluster.condition("Ready") == ("True", "Available"), what="Ready")
        # As the HPA does: 2 → 5 through the scale subresource; nobody plays the kubelet for 3 new pods.
        client.resource("apps/v1", "Deployment").subresources["scale"].patch(
            body={"spec": {"replicas": 5}}, name="demand-blue", namespace=namespace, content_type=MERGE
        )

        seen: list[Any] = []

        def scaled() -> bool:
            deployment = cluster.deployment("demand-blue")
            found = deployment.get("status", {})
            seen[:] = [deployment.get("spec", {}).get("replicas"), found]
            return (found.get("replicas"), found.get("availableReplicas")) == (5, 2)

        # The Deployment and ReplicaSet controllers count the new pods: under a loaded CI host once took
        # over 30 s (it takes under a second on a quiet one); what they had reached is in the message.
        try:
            wait_until(scaled, timeout=120, what="5 replicas, 2 available")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen spec.replicas, status: {seen}") from None
        decisions = len([line for line in operator.log() if "step" in line])
        # An unrelated edit makes the operator look at the scaled Deployment once more.
        cluster.client.resource(FM_API, res.KIND).patch(
            body={"metadata": {"labels": {"team": "demand"}}},
            name="demand",
            namespace=namespace,
            content_type=MERGE,
        )
        wait_until(
            lambda: len([line for line in operator.log() if "step" in line]) > decisions,
            what="another decision",
        )
        assert cluster.condition("Ready") == ("True", "Available")
        assert cluster.replicas("demand-blue") == 5  # the operator leaves the count to the HPA


def test_a_store_outage_is_retried_and_never_shown(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store, azurite: Azurite
) -> None:
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        client.resource(FM_API, res.KIND).create(body=forecast_model(store), namespace=namespace)
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-blue"), what="demand-blue")
        make_deployment_available(client, namespace, "demand-blue")
        wait_until(lambda: cluster.condition("Ready") == ("True", "Available"), what="Ready")
        azurite.stop()
        try:
            cluster.patch_spec({"model": {"version": "2"}})  # to be verified while the store is down
            wait_until(lambda: len(failures(operator)) >= 2, timeout=120, what="two failed verifications")
        finally:
            azurite.start()
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-green"), timeout=120, what="healed")
        seen = failures(operator)
        assert {(f["condition"], f["reason"], f["transient"]) for f in seen} == {
            ("ModelVerified", "StoreUnavailable", True)
        }
        assert not any(f["shown"] for f in seen[:2])
        assert cluster.condition("ModelVerified") == ("True", "Verified")
        assert cluster.condition("Ready") == ("True", "Available")  # version 1 served throughout
        assert warnings(cluster) == []


def test_a_wrong_store_key_is_shown_once_and_retried_slowly(
    control_plane: ControlPlane, namespace: str, store: Store, tmp_path: Path
) -> None:
    wrong = store.connection_string.replace(ACCOUNT_KEY, "d3Jvbmcta2V5" * 8)
    process = operator_process(control_plane, namespace, wrong, tmp_path)
    operator = Operator(process, "")
    with process, control_plane.admin() as client, print_log_on_failure(process):
        cluster = Cluster(client, namespace)
        client.resource(FM_API, res.KIND).create(body=forecast_model(store), namespace=namespace)
        wait_until(lambda: cluster.condition("ModelVerified") == ("False", "StoreAccessDenied"), what="shown")
        wait_until(lambda: len(failures(operator)) >= 2, timeout=60, what="retried")
        seen = failures(operator)[:2]
        assert [(f["attempt"], f["transient"], f["shown"]) for f in seen] == [
            (1, False, True),
            (2, False, True),
        ]
        assert seen[0]["retryInSeconds"] >= 10  # slowly
        assert [e["reason"] for e in warnings(cluster)] == ["StoreAccessDenied"]  # one Event, not one a retry
        assert cluster.read("apps/v1", "Deployment", "demand-blue") is None  # nothing unverified deploys
        assert "d3Jvbmcta2V5" not in process.output()

"""Blue/green rollouts on a real control plane: a version that never becomes available, a version that
does not exist, `kill -9` mid-rollout, and the rollback to the retained colour.

`forecast operator` runs as a process (tests/operator/conftest.py); the test plays the kubelet.
"""

from __future__ import annotations

from typing import Any

import pytest

from retail_forecast.operator import resources as res
from tests.controlplane import ControlPlane, make_deployment_available, wait_until
from tests.operator.conftest import FM_API, Cluster, Operator, Store

pytestmark = pytest.mark.timeout(300)


def forecast_model(store: Store, *, scale_down_delay: int) -> dict[str, Any]:
    return {
        "apiVersion": FM_API,
        "kind": res.KIND,
        "metadata": {"name": "demand"},
        "spec": {
            "model": {"name": "demand", "version": "1", "storeUri": store.uri},
            "serving": {"image": "registry.local/inference:1"},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4},
            "rollout": {
                "progressDeadlineSeconds": 10,
                "scaleDownDelaySeconds": scale_down_delay,
                "autoPromote": True,
            },
        },
    }


def serving_blue(cluster: Cluster, store: Store, *, scale_down_delay: int = 3600) -> None:
    cluster.client.resource(FM_API, res.KIND).create(
        body=forecast_model(store, scale_down_delay=scale_down_delay), namespace=cluster.namespace
    )
    wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-blue"), what="demand-blue")
    make_deployment_available(cluster.client, cluster.namespace, "demand-blue")
    wait_until(lambda: cluster.condition("Ready") == ("True", "Available"), what="Ready")


def serves(cluster: Cluster, name: str) -> tuple[int | None, Any]:
    return cluster.replicas(name), cluster.deployment(name)["spec"]["template"]


def status(cluster: Cluster) -> dict[str, Any]:
    return dict((cluster.read(FM_API, res.KIND, "demand") or {}).get("status") or {})


def events(cluster: Cluster, reason: str, about: str = "") -> list[dict[str, Any]]:
    found = cluster.client.list("v1", "Event", cluster.namespace)
    return [e for e in found if e["reason"] == reason and about in e["message"]]


def test_a_version_that_never_becomes_available_is_abandoned_and_blue_keeps_serving(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        serving_blue(cluster, store)
        # What serves must not change: blue's pod template and replica count.
        blue = serves(cluster, "demand-blue")
        cluster.patch_spec({"model": {"version": "2"}})
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-green"), what="demand-green")
        # Nobody plays the kubelet for green: the operator's 10 s deadline passes (a timer, no event).
        wait_until(lambda: cluster.replicas("demand-green") == 0, timeout=60, what="green scaled to zero")
        wait_until(
            lambda: cluster.condition("Degraded") == ("True", "ProgressDeadlineExceeded"), what="Degraded"
        )
        assert [e["type"] for e in events(cluster, "RolledBack")] == ["Warning"]
        assert (cluster.selected("demand"), cluster.hpa_target()) == ("blue", "demand-blue")
        assert cluster.read("v1", "Service", "demand-preview") is None
        assert cluster.condition("Ready") == ("True", "Available")
        assert serves(cluster, "demand-blue") == blue

        # A version that is not in the store is refused; nothing that serves changes.
        cluster.patch_spec({"model": {"version": "9"}})
        wait_until(
            lambda: (cluster.condition("ModelVerified") or ("", ""))[1] == "ModelVerificationFailed",
            what="ModelVerified=False",
        )
        assert cluster.selected("demand") == "blue"
        assert serves(cluster, "demand-blue") == blue


def test_kill_9_mid_rollout_then_rollback_to_the_retained_colour(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        serving_blue(cluster, store)
        cluster.patch_spec({"model": {"version": "2"}})
        wait_until(lambda: status(cluster).get("previewVersion") == "2", what="preview of 2")
        # kopf posts events from a queue after the status write: a kill -9 in between loses the event
        # (events are best effort), so the kill waits for it; the restart must then add none.
        wait_until(lambda: len(events(cluster, "RolloutStarted", "deploying 2")) == 1, what="RolloutStarted")
        operator.process.kill()

        make_deployment_available(client, namespace, "demand-green")  # while no operator runs
        assert cluster.selected("demand") == "blue"
        operator.process.start()
        wait_until(lambda: cluster.selected("demand") == "green", what="Service → green after the restart")
        wait_until(lambda: cluster.hpa_target() == "demand-green", what="HPA → green")
        wait_until(lambda: status(cluster).get("activeVersion") == "2", what="activeVersion 2")
        assert len(events(cluster, "RolloutStarted", "deploying 2")) == 1  # the restart repeated nothing
        assert cluster.replicas("demand-blue") == 2  # retained for an hour

        # Back to 1: blue still runs it, so traffic switches without a rollout.
        cluster.patch_spec({"model": {"version": "1"}})
        wait_until(lambda: cluster.selected("demand") == "blue", what="Service → blue")
        wait_until(lambda: cluster.hpa_target() == "demand-blue", what="HPA → blue")
        assert len(events(cluster, "RolloutStarted")) == 2  # 1 then 2: the rollback started none
        assert status(cluster).get("previewVersion") is None
        assert cluster.replicas("demand-green") == 2  # now the retained colour

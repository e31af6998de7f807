"""No write loop, ever: for each field of the spec set, changed and removed, the children converge and
then the operator writes nothing, counted on a real API server (its audit log, by user).

The test plays the kubelet for every pod of the model while it waits. After each change it waits for a
quiet window (no write by the operator for QUIET_SECONDS; a loop never has one); at the end the operator
must make zero write requests for FINAL_QUIET_SECONDS (30 s, as in issue #10).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Final

import kubernetes.dynamic.exceptions
import pytest

from retail_forecast.operator import resources as res
from tests.controlplane import ControlPlane, mark_pods_ready, wait_until
from tests.operator.conftest import FM_API, Cluster, Operator, Store, create_scorer_account, forecast_model

pytestmark = pytest.mark.timeout(900)

WRITES: Final = {"create", "patch", "update", "delete"}
QUIET_SECONDS: Final = 3.0
FINAL_QUIET_SECONDS: Final = 30.0


def matrix(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """(what, merge patch of the spec): every field of model, serving, autoscaling, rollout and batch."""
    return [
        ("model.sha256 set", {"model": {"sha256": store.sha["1"]}}),
        ("model.version changed", {"model": {"version": "2", "sha256": store.sha["2"]}}),
        ("model.sha256 removed", {"model": {"sha256": None}}),
        ("serving.image changed", {"serving": {"image": "registry.local/inference:2"}}),
        ("serving.env set", {"serving": {"env": [{"name": "FORECAST_LOG_LEVEL", "value": "debug"}]}}),
        ("serving.env changed", {"serving": {"env": [{"name": "FORECAST_LOG_LEVEL", "value": "info"}]}}),
        ("serving.env removed", {"serving": {"env": None}}),
        ("serving.resources set", {"serving": {"resources": {"requests": {"cpu": "100m"}}}}),
        ("serving.resources changed", {"serving": {"resources": {"requests": {"cpu": "200m"}}}}),
        ("serving.resources removed", {"serving": {"resources": None}}),
        ("serving.serviceAccountName set", {"serving": {"serviceAccountName": "scorer"}}),
        ("serving.serviceAccountName removed", {"serving": {"serviceAccountName": None}}),
        ("autoscaling.minReplicas changed", {"autoscaling": {"minReplicas": 1}}),
        ("autoscaling.maxReplicas changed", {"autoscaling": {"maxReplicas": 5}}),
        ("autoscaling.targetCPU changed", {"autoscaling": {"targetCPUUtilizationPercentage": 50}}),
        ("autoscaling removed", {"autoscaling": None}),
        ("autoscaling.enabled off", {"autoscaling": {"enabled": False}}),
        ("serving.replicas changed", {"serving": {"replicas": 3}}),
        ("serving.replicas 0 (parked)", {"serving": {"replicas": 0}}),
        ("serving.replicas removed", {"serving": {"replicas": None}}),
        ("autoscaling.enabled on", {"autoscaling": {"enabled": True}}),
        ("rollout.progressDeadlineSeconds changed", {"rollout": {"progressDeadlineSeconds": 120}}),
        ("rollout.scaleDownDelaySeconds changed", {"rollout": {"scaleDownDelaySeconds": 5}}),
        ("rollout.autoPromote off", {"rollout": {"autoPromote": False}}),
        ("rollout removed", {"rollout": None}),
        ("batch set", {"batch": {"schedule": "0 2 * * *", "input": "/data/s.csv", "output": "/runs"}}),
        ("batch.resources set", {"batch": {"resources": {"requests": {"cpu": "500m"}}}}),
        ("batch.suspend on", {"batch": {"suspend": True}}),
        ("batch removed", {"batch": None}),
        ("model.version back", {"model": {"version": "1"}}),
    ]


def test_no_write_loop_across_the_spec_matrix(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        create_scorer_account(client, namespace)

        def kubelet() -> None:
            for color in res.Color:
                if cluster.read("apps/v1", "Deployment", res.deployment_name("demand", color)):
                    # NotFound: a pod the ReplicaSet deleted between the list and the status write.
                    with contextlib.suppress(kubernetes.dynamic.exceptions.NotFoundError):
                        mark_pods_ready(client, namespace, res.deployment_name("demand", color))

        def writes() -> list[tuple[str, str, str]]:
            return [
                (e.verb, e.resource, e.name) for e in control_plane.audit(operator.user) if e.verb in WRITES
            ]

        def converged(generation: int) -> bool:
            """The operator saw this generation, and has written nothing for QUIET_SECONDS."""
            kubelet()
            found = cluster.read(FM_API, res.KIND, "demand") or {}
            if (found.get("status") or {}).get("observedGeneration") != generation:
                return False
            before = len(writes())
            deadline = time.monotonic() + QUIET_SECONDS
            while time.monotonic() < deadline:
                kubelet()
                time.sleep(0.5)
            return len(writes()) == before

        fms = client.resource(FM_API, res.KIND)
        created = fms.create(body=forecast_model(store), namespace=namespace)
        wait_until(lambda: converged(created.metadata.generation), timeout=120, what="first deploy converged")
        for what, spec in [("created", {}), *matrix(store)]:
            if spec:
                patched = fms.patch(
                    body={"spec": spec},
                    name="demand",
                    namespace=namespace,
                    content_type="application/merge-patch+json",
                )
                generation = int(patched.metadata.generation)
                wait_until(functools.partial(converged, generation), timeout=120, what=f"{what}: converged")

        # A version with autoPromote off is previewed and waits; back to 1, nothing is pending.
        assert cluster.condition("Ready") == ("True", "Available")
        before = writes()
        time.sleep(FINAL_QUIET_SECONDS)
        assert writes()[len(before) :] == [], "the operator wrote in steady state"

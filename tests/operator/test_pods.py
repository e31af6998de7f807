"""Why a colour is not available, in its pods' words: pod objects as a v1.28 API server answers a list
(the kubelet's status fields, the Deployment controller's ReplicaFailure), no server."""

from __future__ import annotations

import copy
from typing import Any, Final

import pytest

from retail_forecast.operator.pods import (
    EXPLANATIONS,
    MESSAGE_CHARS,
    SUMMARY_CHARS,
    pod_trouble,
    termination_message,
    why_unavailable,
)

T0: Final = "2026-11-29T21:00:00Z"
T1: Final = "2026-11-29T21:00:07Z"
IMAGE: Final = "registry.local/inference:2"
# What `forecast fetch-model` prints as its last line when the model's feature schema is not this image's.
SCHEMA: Final = (
    "forecast: error: model demand 2: model built with feature spec fs0, this code computes fs1 "
    "(features differ: lag_364 missing)"
)


def pod(name: str, status: dict[str, Any], *, deleting: bool = False) -> dict[str, Any]:
    """A scoring pod of demand-green as the API server lists it (metadata, a trimmed spec, `status`)."""
    metadata: dict[str, Any] = {
        "name": name,
        "generateName": "demand-green-7d9f5c6b8-",
        "namespace": "shop",
        "uid": "0b3c8a6e-6f0e-4d2b-9c1f-5a1e2b3c4d5e",
        "resourceVersion": "4182",
        "creationTimestamp": T0,
        "labels": {
            "app.kubernetes.io/name": "forecast-model",
            "app.kubernetes.io/instance": "demand",
            "app.kubernetes.io/managed-by": "retail-forecast-operator",
            "retailforecast.io/color": "green",
            "retailforecast.io/model-version": "2",
            "pod-template-hash": "7d9f5c6b8",
        },
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "demand-green-7d9f5c6b8",
                "uid": "5f1d2c3b-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if deleting:
        metadata["deletionTimestamp"] = T1
        metadata["deletionGracePeriodSeconds"] = 30
    spec = {
        "initContainers": [{"name": "fetch-model", "image": IMAGE}],
        "containers": [{"name": "serve", "image": IMAGE}],
        "nodeName": "node-1",
        "restartPolicy": "Always",
        "serviceAccountName": "default",
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def condition(
    kind: str, status: str, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": T0}
    if reason is not None:
        found["reason"] = reason
    if message is not None:
        found["message"] = message
    return found


def container(name: str, state: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "imageID": "",
        "lastState": {},
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": state,
        **more,
    }


def terminated(code: int, message: str | None = None, reason: str = "Error") -> dict[str, Any]:
    found: dict[str, Any] = {
        "exitCode": code,
        "reason": reason,
        "startedAt": T0,
        "finishedAt": T1,
        "containerID": "containerd://8c1e5d0f2b",
    }
    if message is not None:
        found["message"] = message
    return found


def started(
    init: list[dict[str, Any]], main: list[dict[str, Any]], *, ready: bool = False, phase: str = "Pending"
) -> dict[str, Any]:
    """A scheduled pod's status, as the kubelet writes it."""
    not_ready = "ContainersNotReady"
    return {
        "phase": phase,
        "hostIP": "10.224.0.4",
        "podIP": "10.244.0.17",
        "podIPs": [{"ip": "10.244.0.17"}],
        "qosClass": "Burstable",
        "startTime": T0,
        "conditions": [
            condition("Initialized", "True"),
            condition("Ready", "True") if ready else condition("Ready", "False", not_ready),
            condition("ContainersReady", "True")
            if ready
            else condition("ContainersReady", "False", not_ready),
            condition("PodScheduled", "True"),
        ],
        "initContainerStatuses": init,
        "containerStatuses": main,
    }


INITIALIZING: Final = container("serve", {"waiting": {"reason": "PodInitializing"}})
FETCHED: Final = container("fetch-model", {"terminated": terminated(0, reason="Completed")})


def refused(name: str, message: str = SCHEMA) -> dict[str, Any]:
    """fetch-model just exited 4 (the kubelet has not restarted it yet)."""
    return pod(
        name, started([container("fetch-model", {"terminated": terminated(4, message)})], [INITIALIZING])
    )


def test_an_init_container_that_exited_says_its_code_and_its_termination_message() -> None:
    assert why_unavailable([refused("demand-green-7d9f5c6b8-abcde")]) == (
        f"pod demand-green-7d9f5c6b8-abcde: init container fetch-model exited 4: {SCHEMA}"
    )


def test_a_crash_loop_shows_the_last_exit_and_the_back_off() -> None:
    looping = container(
        "fetch-model",
        {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": "back-off 40s restarting failed container=fetch-model pod=demand-green-x_shop",
            }
        },
        lastState={"terminated": terminated(4, SCHEMA + "\n")},
        restartCount=3,
    )
    found = why_unavailable([pod("demand-green-x", started([looping], [INITIALIZING]))])
    assert (
        found
        == f"pod demand-green-x: init container fetch-model exited 4 (CrashLoopBackOff, 3 restarts): {SCHEMA}"
    )


@pytest.mark.parametrize(
    ("init", "main", "expected"),
    [
        (
            [
                container(
                    "fetch-model",
                    {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f'Back-off pulling image "{IMAGE}"',
                        }
                    },
                )
            ],
            [INITIALIZING],
            f'init container fetch-model ImagePullBackOff: Back-off pulling image "{IMAGE}"',
        ),
        (
            [FETCHED],
            [
                container(
                    "serve",
                    {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "store" not found',
                        }
                    },
                )
            ],
            'container serve CreateContainerConfigError: secret "store" not found',
        ),
        (
            [FETCHED],
            [container("serve", {"running": {"startedAt": T1}}, started=True)],
            "container serve running, not ready",
        ),
        (
            [FETCHED],
            [
                container(
                    "serve",
                    {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting"}},
                    lastState={"terminated": terminated(137, reason="OOMKilled")},
                    restartCount=1,
                )
            ],
            "container serve exited 137 (CrashLoopBackOff, 1 restarts): OOMKilled",
        ),
        (
            [container("fetch-model", {"running": {"startedAt": T1}}, started=True)],
            [INITIALIZING],
            "init container fetch-model running",
        ),
    ],
    ids=["image-pull", "config-error", "not-ready", "oom-loop", "still-fetching"],
)
def test_a_container_that_holds_the_pod_back_says_why(
    init: list[dict[str, Any]], main: list[dict[str, Any]], expected: str
) -> None:
    assert pod_trouble(pod("p", started(init, main))) == expected


def test_a_pod_that_was_never_scheduled_says_what_the_scheduler_said() -> None:
    pending = {
        "phase": "Pending",
        "qosClass": "Burstable",
        "conditions": [
            condition(
                "PodScheduled", "False", "Unschedulable", "0/1 nodes are available: 1 Insufficient cpu."
            )
        ],
    }
    assert (
        pod_trouble(pod("p", pending))
        == "not scheduled: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    )


def test_an_evicted_pod_says_so() -> None:
    evicted = {
        "phase": "Failed",
        "reason": "Evicted",
        "message": "The node was low on resource: memory.",
        "startTime": T0,
    }
    assert pod_trouble(pod("p", evicted)) == "Failed: Evicted: The node was low on resource: memory."


def test_no_pods_says_why_the_replica_set_made_none() -> None:
    forbidden = (
        'pods "demand-green-7d9f5c6b8-" is forbidden: error looking up service account shop/scorer: '
        'serviceaccount "scorer" not found'
    )
    deployment = {
        "metadata": {"name": "demand-green"},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                condition("Progressing", "True", "NewReplicaSetCreated"),
                condition("Available", "False", "MinimumReplicasUnavailable"),
                condition("ReplicaFailure", "True", "FailedCreate", forbidden),
            ],
        },
    }
    assert why_unavailable([], deployment) == f"no pods: FailedCreate: {forbidden}"
    assert why_unavailable([]) == "no pods"
    # A pod being deleted explains nothing any more.
    assert why_unavailable([pod("gone", refused("gone")["status"], deleting=True)]) == "no pods"


def test_ready_pods_are_not_blamed_and_pods_that_fail_alike_are_named_together() -> None:
    serving = container("serve", {"running": {"startedAt": T1}}, ready=True, started=True)
    ready = pod("demand-green-a", started([FETCHED], [serving], ready=True, phase="Running"))
    pods = [refused(f"demand-green-{n}") for n in "edcb"] + [ready]
    assert why_unavailable(pods) == (
        f"pods demand-green-b, demand-green-c and 2 more: init container fetch-model exited 4: {SCHEMA}"
    )
    assert why_unavailable([ready]) == "pod demand-green-a: ready, not yet available"


def test_the_summary_is_bounded_and_keeps_each_messages_end() -> None:
    log = "\n".join(f"line {n}: fetching blob part {n} of the model" for n in range(200)) + "\n" + SCHEMA
    pods = [refused(f"demand-green-{n}", f"{log} ({n})") for n in range(EXPLANATIONS + 4)]
    found = why_unavailable(pods)
    assert len(found) <= SUMMARY_CHARS
    assert "\n" not in found
    first = pod_trouble(pods[0])
    assert first is not None and first.endswith(f"{SCHEMA} (0)") and "line 0:" not in first
    assert len(first) <= len("init container fetch-model exited 4: ") + MESSAGE_CHARS
    # Each of the first explanations fits whole; the rest are counted, not shown.
    short = [refused(f"demand-green-{n}", f"refused ({n})") for n in range(EXPLANATIONS + 2)]
    assert why_unavailable(short).endswith("; 2 more pods fail otherwise")
    assert len(why_unavailable(pods, limit=200)) <= 200


def test_the_batch_runs_termination_message_is_read_from_the_newest_ended_pod() -> None:
    older, newer = copy.deepcopy(refused("run-a")), copy.deepcopy(refused("run-b"))
    for found, (created, said) in zip((older, newer), ((T0, "first try"), (T1, "second try")), strict=True):
        found["metadata"]["creationTimestamp"] = created
        found["status"]["phase"] = "Failed"
        found["status"]["containerStatuses"] = [container("predict", {"terminated": terminated(1, said)})]
    assert termination_message([older, newer], "predict", "Failed") == "second try"
    assert termination_message([older, newer], "predict", "Succeeded") is None
    assert termination_message([older, newer], "serve", "Failed") is None

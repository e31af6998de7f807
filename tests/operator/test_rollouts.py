"""Blue/green rollouts on a real control plane: a version that never becomes available, a version that
does not exist, `kill -9` mid-rollout, and the rollback to the retained colour.

`forecast operator` runs as a process (tests/operator/conftest.py); the test plays the kubelet.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from retail_forecast.operator import resources as res
from tests.controlplane import ControlPlane, make_deployment_available, wait_until
from tests.operator.conftest import FM_API, MERGE, Cluster, Operator, Store, forecast_model

pytestmark = pytest.mark.timeout(300)


def serving_blue(cluster: Cluster, store: Store, **rollout: Any) -> None:
    """ForecastModel `demand` (`rollout` overrides: a 10 s deadline, an hour's scale-down delay) on blue."""
    spec = forecast_model(
        store, rollout={"progressDeadlineSeconds": 10, "scaleDownDelaySeconds": 3600, **rollout}
    )
    cluster.client.resource(FM_API, res.KIND).create(body=spec, namespace=cluster.namespace)
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
        # kopf posts Events from a queue after the status write: wait for it, then count.
        wait_until(lambda: events(cluster, "RolledBack"), what="the RolledBack Event")
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


def refuse_the_model(cluster: Cluster, pod: str, message: str) -> None:
    """Play the kubelet for a pod whose `fetch-model` init container just exited 4, leaving `message`
    as its termination message (FallbackToLogsOnError: the log's last line)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    waiting = {"name": "serve", "image": "registry.local/inference:1", "imageID": "", "ready": False}
    fetch = {
        "name": "fetch-model",
        "image": "registry.local/inference:1",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 4, "reason": "Error", "message": message, "finishedAt": now}},
    }
    status = {
        "phase": "Pending",
        "startTime": now,
        "conditions": [
            {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            {"type": "PodScheduled", "status": "True"},
        ],
        "initContainerStatuses": [fetch],
        "containerStatuses": [
            {**waiting, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ],
    }
    cluster.client.resource("v1", "Pod").status.patch(
        body={"status": status}, name=pod, namespace=cluster.namespace, content_type=MERGE
    )


def test_a_rolled_back_preview_says_what_its_pods_said(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    refusal = "forecast: error: model demand 2: model built with feature spec fs0, this code computes fs1"
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        serving_blue(cluster, store, progressDeadlineSeconds=600)
        cluster.patch_spec({"model": {"version": "2"}})
        green = f"{res.LABEL_COLOR}=green"
        wait_until(lambda: len(client.list("v1", "Pod", namespace, green)) == 2, what="green's 2 pods")
        names = sorted(p["metadata"]["name"] for p in client.list("v1", "Pod", namespace, green))
        for name in names:
            refuse_the_model(cluster, name, f"fetching demand 2\n{refusal}\n")

        def pod_reads() -> list[tuple[str, int]]:
            return [(e.verb, e.code) for e in control_plane.audit(operator.user) if e.resource == "pods"]

        assert pod_reads() == []  # while the preview may still start, nothing failed: no pod is read
        cluster.patch_spec({"rollout": {"progressDeadlineSeconds": 10}})  # the deadline passes now

        said = (
            f"pods {names[0]}, {names[1]}: init container fetch-model exited 4: fetching demand 2 {refusal}"
        )
        rolled_back = wait_until(lambda: events(cluster, "RolledBack"), what="the RolledBack Event")
        assert [e["message"] for e in rolled_back] == [
            f"2 on green was not available within 10s; scaled to zero, 1 on blue keeps serving; {said}"
        ]
        degraded = {c["type"]: c for c in status(cluster)["conditions"]}["Degraded"]
        assert (degraded["status"], degraded["reason"]) == ("True", "ProgressDeadlineExceeded")
        assert degraded["message"] == f"2 never became available; the previous version keeps serving; {said}"
        assert cluster.condition("Ready") == ("True", "Available")
        # One list of the model's pods, at the rollback; blue serves, so nothing reads them again.
        assert pod_reads() == [("list", 200)]


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


# kill -9 at each later step of rollout.py's state machine (mid-preview is the test above). Each waits for
# the step's Event before the kill (kopf posts it from a queue after the status write).
STEPS: dict[str, dict[str, Any]] = {
    # The preview is available and waits for the promote annotation, which comes while no operator runs.
    "awaiting-promotion": {"autoPromote": False},
    # Traffic moved; the old colour's scale-down delay passes while no operator runs.
    "traffic-moved": {"scaleDownDelaySeconds": 5},
    # Traffic moved; the operator is back before the delay ends and must wait it out from the status.
    "scale-down-delay": {"scaleDownDelaySeconds": 25},
}


@pytest.mark.parametrize("step", list(STEPS))
def test_kill_9_at_a_rollout_step_the_restart_finishes_it_and_repeats_nothing(
    step: str, control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        serving_blue(cluster, store, progressDeadlineSeconds=300, **STEPS[step])
        cluster.patch_spec({"model": {"version": "2"}})
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-green"), what="demand-green")
        make_deployment_available(client, namespace, "demand-green")
        if step == "awaiting-promotion":
            wait_until(
                lambda: cluster.condition("Progressing") == ("True", "AwaitingPromotion"), what="awaiting"
            )
            operator.process.kill()
            client.resource(FM_API, res.KIND).patch(
                body={"metadata": {"annotations": {f"{res.GROUP}/promote": "2"}}},
                name="demand",
                namespace=namespace,
                content_type=MERGE,
            )
            assert cluster.selected("demand") == "blue"
        else:
            wait_until(lambda: len(events(cluster, "Promoted", "activeVersion=2")) == 1, what="Promoted")
            operator.process.kill()
            assert (cluster.selected("demand"), cluster.hpa_target()) == ("green", "demand-green")
            assert cluster.replicas("demand-blue") == 2  # not yet scaled down: its delay runs
            if step == "traffic-moved":
                retire_at = float(status(cluster)["rollout"]["retireAt"])
                wait_until(lambda: time.time() > retire_at + 1, what="the delay passed, no operator")
        retire_at = float(status(cluster).get("rollout", {}).get("retireAt") or 0)
        operator.process.start()
        if time.time() < retire_at:  # (scale-down-delay) the restarted operator waits the delay out
            assert cluster.replicas("demand-blue") == 2
        if step != "awaiting-promotion":
            wait_until(lambda: cluster.replicas("demand-blue") == 0, timeout=60, what="blue scaled down")
        wait_until(lambda: cluster.selected("demand") == "green", what="Service → green")
        wait_until(lambda: status(cluster).get("activeVersion") == "2", what="activeVersion 2")
        # Nothing serves a wrong version: what the Service selects runs the active version, available.
        green = cluster.deployment("demand-green")
        assert green["metadata"]["labels"][res.LABEL_VERSION] == "2"
        assert cluster.hpa_target() == "demand-green"
        assert cluster.condition("Ready") == ("True", "Available")
        # Nothing repeated: one start and one promotion of 2.
        assert len(events(cluster, "RolloutStarted", "deploying 2")) == 1
        wait_until(lambda: events(cluster, "Promoted", "activeVersion=2"), what="Promoted event")
        assert len(events(cluster, "Promoted", "activeVersion=2")) == 1


def test_the_log_has_a_json_line_per_decision_and_per_write_and_no_secret(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    secret = "DefaultEndpointsProtocol=https;AccountName=scorer;AccountKey=bm90LWEtcmVhbC1rZXk="
    spec = forecast_model(
        store, serving={"env": [{"name": "AZURE_STORAGE_CONNECTION_STRING", "value": secret}]}
    )
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        client.resource(FM_API, res.KIND).create(body=spec, namespace=namespace)
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-blue"), what="demand-blue")
        make_deployment_available(client, namespace, "demand-blue")
        wait_until(lambda: cluster.condition("Ready") == ("True", "Available"), what="Ready")
        rotated = secret.replace("bm90LWEtcmVhbC1rZXk=", "cm90YXRlZC1rZXk=")  # the change is logged, not it
        cluster.patch_spec(
            {"serving": {"env": [{"name": "AZURE_STORAGE_CONNECTION_STRING", "value": rotated}]}}
        )
        wait_until(lambda: rotated in str(cluster.pod_spec("demand-blue")), what="the rotated secret applied")
        cluster.patch_spec({"model": {"version": "2"}})
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-green"), what="demand-green")
        make_deployment_available(client, namespace, "demand-green")
        wait_until(lambda: status(cluster).get("activeVersion") == "2", what="activeVersion 2")
        wait_until(lambda: cluster.read("v1", "Service", "demand-preview") is None, what="preview deleted")

    text = operator.process.output()
    for leaked in (
        "bm90LWEtcmVhbC1rZXk",
        "cm90YXRlZC1rZXk",
        store.connection_string.split("AccountKey=")[1][:20],
    ):
        assert leaked not in text
    lines = operator.log()  # every line is JSON
    mine = [line for line in lines if (line.get("object") or {}).get("name") == "demand"]
    assert all(
        line["object"]["namespace"] == namespace and line["object"]["kind"] == res.KIND for line in mine
    )
    assert {line["severity"] for line in mine} == {"info"}  # INFO by default
    steps = [line["step"] for line in mine if "step" in line]
    assert steps[0] == "preview" and "steady" in steps  # version 1's first deploy, then 2's preview
    assert steps.count("preview") >= 2
    writes = [
        (line["write"], line.get("child", {}).get("name"), line.get("changed"))
        for line in mine
        if "write" in line
    ]
    assert ("apply", "demand-green", ["(new)"]) in writes
    rotation = [c for w, child, c in writes if child == "demand-blue" and c and "(new)" not in c]
    assert any("spec.template.spec.containers" in c for c in rotation), rotation
    service = [changed for write, child, changed in writes if child == "demand" and write == "apply"]
    assert ["(new)"] in service and any(f"spec.selector.{res.LABEL_COLOR}" in c for c in service if c)
    assert ("delete", "demand-preview", None) in writes
    events = [line["events"] for line in mine if line.get("write") == "status"]
    assert ["RolloutStarted"] in events and ["Promoted"] in events

"""The blue/green state machine, driven step by step against a simulated cluster (no server)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from retail_forecast.operator.resources import Color, ForecastModelSpec
from retail_forecast.operator.rollout import ColorState, Condition, Event, RolloutStatus, Step, next_step

SHA = {v: v.rjust(64, "0") for v in ("1", "2", "3")}


def make_spec(version: str = "1", **overrides: Any) -> ForecastModelSpec:
    raw: dict[str, Any] = {
        "model": {"name": "demand", "version": version, "storeUri": "azureblob://models"},
        "serving": {"image": "registry.local/inference:1", "replicas": 2},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        "rollout": {"progressDeadlineSeconds": 60, "scaleDownDelaySeconds": 30, "autoPromote": True},
    }
    for path, value in overrides.items():
        section, key = path.split(".")
        raw[section][key] = value
    return ForecastModelSpec.model_validate(raw)


@dataclass
class Cluster:
    """Plays the Deployment controller and kubelet: a colour becomes available one tick after it is set,
    unless its version is marked broken (pods never pass readiness); and the reconciler's pod read, where
    `pods_say` is what a colour's pods say (`pods.why_unavailable`)."""

    broken: set[str] = field(default_factory=set)
    colors: dict[Color, ColorState | None] = field(
        default_factory=lambda: {Color.BLUE: None, Color.GREEN: None}
    )
    status: RolloutStatus = field(default_factory=RolloutStatus)
    now: float = 1000.0
    events: list[str] = field(default_factory=list)
    emitted: list[Event] = field(default_factory=list)
    last: Step | None = None
    pods_say: dict[Color, str] = field(default_factory=dict)
    pod_reads: int = 0

    def reconcile(self, spec: ForecastModelSpec, promote: bool = False) -> Step:
        step = next_step(
            spec, SHA[spec.model.version], self.status, self.colors, self.now, promote_requested=promote
        )
        if step.failing:  # as the reconciler does: read the failing colours' pods, then ask again
            self.pod_reads += 1
            said = {color: self.pods_say.get(color, "no pods") for color in step.failing}
            step = next_step(
                spec,
                SHA[spec.model.version],
                self.status,
                self.colors,
                self.now,
                promote_requested=promote,
                pods_say=said,
            )
        for color, intent in step.deployments.items():
            old = self.colors[color]
            replicas = intent.replicas if intent.replicas is not None else (old.replicas if old else 2)
            if old is None or old.version != intent.version or old.replicas != replicas:
                self.colors[color] = ColorState(
                    intent.version, intent.sha256, replicas, generation=(old.generation + 1 if old else 1)
                )
        for color in step.scale_to_zero:
            old = self.colors[color]
            if old is not None:
                self.colors[color] = ColorState(old.version, old.sha256, 0, generation=old.generation + 1)
        self.status = step.status
        self.events += [e.reason for e in step.events]
        self.emitted += step.events
        self.last = step
        return step

    def tick(self, seconds: float = 5.0) -> None:
        """Time passes; healthy Deployments roll out completely."""
        self.now += seconds
        for color, state in self.colors.items():
            if state is not None and state.version not in self.broken and state.replicas > 0:
                n = state.replicas
                self.colors[color] = ColorState(
                    state.version, state.sha256, n, n, n, n, state.generation, state.generation
                )


def serving(cluster: Cluster) -> tuple[Color | None, str | None]:
    return cluster.status.active_color, cluster.status.active_version


def test_first_deploy_goes_to_blue_and_becomes_ready() -> None:
    cluster = Cluster()
    step = cluster.reconcile(make_spec("1"))
    assert set(step.deployments) == {Color.BLUE} and step.service_color is Color.BLUE
    assert step.conditions["Ready"].status == "False" and step.conditions["Progressing"].status == "True"
    cluster.tick()
    step = cluster.reconcile(make_spec("1"))
    assert serving(cluster) == (Color.BLUE, "1")
    assert step.hpa_color is Color.BLUE and step.preview_color is None
    assert step.conditions["Ready"].status == "True"
    assert cluster.events == ["RolloutStarted", "Promoted"]
    assert cluster.pod_reads == 0  # nothing failed: no pod is read


def steady(cluster: Cluster, version: str = "1") -> None:
    cluster.reconcile(make_spec(version))
    cluster.tick()
    cluster.reconcile(make_spec(version))
    assert serving(cluster)[1] == version


@pytest.mark.parametrize(("available", "ready"), [(5, "True"), (2, "True"), (1, "True"), (0, "False")])
def test_ready_means_the_active_colour_has_an_available_replica_not_all_of_them(
    available: int, ready: str
) -> None:
    """The HPA scales 2 → 5: three pods start, the two that serve keep the model Ready."""
    cluster = Cluster()
    steady(cluster)
    cluster.colors[Color.BLUE] = ColorState("1", SHA["1"], 5, available, available, 5, 3, 3)
    step = cluster.reconcile(make_spec("1"))
    assert step.conditions["Ready"].status == ready
    assert step.deployments[Color.BLUE].replicas is None  # the count stays the HPA's


def test_reconciling_a_steady_resource_changes_nothing() -> None:
    cluster = Cluster()
    steady(cluster)
    before = (dict(cluster.colors), cluster.status, len(cluster.events))
    for _ in range(3):
        cluster.tick()
        step = cluster.reconcile(make_spec("1"))
        assert step.events == [] and step.requeue_after is None
    assert (dict(cluster.colors), cluster.status, len(cluster.events)) == before


def test_upgrade_previews_on_the_idle_colour_then_promotes_and_retires_the_old() -> None:
    cluster = Cluster()
    steady(cluster)
    step = cluster.reconcile(make_spec("2"))
    assert step.deployments[Color.GREEN].version == "2"
    assert step.preview_color is Color.GREEN and step.service_color is Color.BLUE  # traffic untouched
    assert step.hpa_color is Color.BLUE
    cluster.tick()
    step = cluster.reconcile(make_spec("2"))
    assert serving(cluster) == (Color.GREEN, "2")
    assert step.service_color is Color.GREEN and step.hpa_color is Color.GREEN
    blue = cluster.colors[Color.BLUE]
    assert blue is not None and blue.replicas > 0  # kept for an instant rollback
    assert step.requeue_after == pytest.approx(30.0)
    cluster.tick(31)
    cluster.reconcile(make_spec("2"))
    blue = cluster.colors[Color.BLUE]
    assert blue is not None and blue.replicas == 0
    assert cluster.events[-2:] == ["RolloutStarted", "Promoted"]


def test_failed_preview_is_scaled_to_zero_and_never_touches_the_active_colour() -> None:
    said = "pod demand-green-x: init container fetch-model exited 4: model demand 2: feature spec fs0"
    cluster = Cluster(broken={"2"}, pods_say={Color.GREEN: said})
    steady(cluster)
    active_before = cluster.colors[Color.BLUE]
    cluster.reconcile(make_spec("2"))
    for _ in range(13):
        cluster.tick()
        step = cluster.reconcile(make_spec("2"))
        assert step.service_color is Color.BLUE
        # The pods are read once, when the deadline passes; never while the preview may still start.
        assert cluster.pod_reads == cluster.events.count("RolledBack")
    assert cluster.colors[Color.BLUE] == active_before
    green = cluster.colors[Color.GREEN]
    assert green is not None and green.replicas == 0
    assert step.conditions["Degraded"].status == "True"
    assert step.conditions["Degraded"].reason == "ProgressDeadlineExceeded"
    assert step.conditions["Ready"].status == "True"  # version 1 still serves
    assert cluster.events[-1] == "RolledBack"
    # The Event and the condition say why, in the pods' words, and the status keeps it for later reconciles.
    assert cluster.emitted[-1].message == (
        f"2 on green was not available within 60s; scaled to zero, 1 on blue keeps serving; {said}"
    )
    degraded = f"2 never became available; the previous version keeps serving; {said}"
    assert step.conditions["Degraded"].message == degraded
    assert cluster.status.failed_reason == said
    # The failed version is not retried on its own, however often the operator reconciles.
    for _ in range(3):
        cluster.tick()
        step = cluster.reconcile(make_spec("2"))
        assert step.events == [] and step.conditions["Degraded"].message == degraded
    assert cluster.pod_reads == 1
    # A new version starts a new rollout and clears Degraded once it is served.
    cluster.broken.clear()
    cluster.reconcile(make_spec("3"))
    cluster.tick()
    step = cluster.reconcile(make_spec("3"))
    assert serving(cluster) == (Color.GREEN, "3")
    assert step.conditions["Degraded"].status == "False" and cluster.status.failed_reason is None


def test_setting_the_version_back_promotes_the_retained_colour_without_a_rollout() -> None:
    cluster = Cluster()
    steady(cluster)
    cluster.reconcile(make_spec("2"))
    cluster.tick()
    cluster.reconcile(make_spec("2"))
    assert serving(cluster) == (Color.GREEN, "2")
    step = cluster.reconcile(make_spec("1"))  # within scaleDownDelay: blue still runs 1
    assert serving(cluster) == (Color.BLUE, "1")
    assert step.service_color is Color.BLUE and "RolloutStarted" not in [e.reason for e in step.events]


def test_reverting_the_spec_during_a_preview_abandons_it() -> None:
    cluster = Cluster(broken={"2"})
    steady(cluster)
    cluster.reconcile(make_spec("2"))
    cluster.tick()
    step = cluster.reconcile(make_spec("1"))
    assert step.preview_color is None and Color.GREEN in step.scale_to_zero
    assert cluster.events[-1] == "RolloutAbandoned"
    assert serving(cluster) == (Color.BLUE, "1")


def test_without_auto_promote_an_available_preview_waits() -> None:
    cluster = Cluster()
    steady(cluster)
    spec = make_spec("2", **{"rollout.autoPromote": False})
    cluster.reconcile(spec)
    cluster.tick()
    step = cluster.reconcile(spec)
    assert serving(cluster) == (Color.BLUE, "1")
    assert step.conditions["Progressing"].reason == "AwaitingPromotion"
    step = cluster.reconcile(spec, promote=True)
    assert serving(cluster) == (Color.GREEN, "2")


def test_a_restarted_operator_computes_the_same_step_from_the_same_state() -> None:
    """State lives in status and Deployments: recomputing mid-rollout repeats no event and moves on."""
    cluster = Cluster()
    steady(cluster)
    first = cluster.reconcile(make_spec("2"))
    again = next_step(make_spec("2"), SHA["2"], cluster.status, cluster.colors, cluster.now)
    assert again.events == [] and again.deployments == first.deployments and again.status == first.status


def test_preview_starts_with_the_active_colours_replicas() -> None:
    """After the HPA scaled the active colour up, the preview must be able to take the same load."""
    cluster = Cluster()
    steady(cluster)
    blue = cluster.colors[Color.BLUE]
    assert blue is not None
    cluster.colors[Color.BLUE] = ColorState(
        blue.version, blue.sha256, 5, 5, 5, 5, blue.generation, blue.generation
    )
    step = cluster.reconcile(make_spec("2"))
    assert step.deployments[Color.GREEN].replicas == 5
    assert step.deployments[Color.BLUE].replicas is None  # the HPA owns the active colour's count


def test_fixed_replicas_without_autoscaling() -> None:
    cluster = Cluster()
    spec = make_spec("1", **{"autoscaling.enabled": False, "serving.replicas": 3})
    cluster.reconcile(spec)
    cluster.tick()
    step = cluster.reconcile(spec)
    assert step.hpa_color is None and step.deployments[Color.BLUE].replicas == 3


def test_deleted_active_deployment_is_recreated() -> None:
    cluster = Cluster()
    steady(cluster)
    cluster.colors[Color.BLUE] = None
    step = cluster.reconcile(make_spec("1"))
    assert step.deployments[Color.BLUE].replicas == 2
    assert step.conditions["Ready"].status == "False"
    assert step.conditions["Ready"].message == "1 on blue has no available replicas; no pods"


def test_an_active_colour_with_no_available_replica_says_why_in_its_pods_words() -> None:
    said = "pod demand-blue-x: container serve exited 137 (CrashLoopBackOff, 2 restarts): OOMKilled"
    cluster = Cluster(pods_say={Color.BLUE: said})
    steady(cluster)
    assert cluster.pod_reads == 0
    cluster.colors[Color.BLUE] = ColorState("1", SHA["1"], 2, 0, 0, 2, 3, 3)
    step = cluster.reconcile(make_spec("1"))
    assert step.failing == frozenset({Color.BLUE}) and cluster.pod_reads == 1
    assert step.conditions["Ready"] == Condition(
        "False", "Unavailable", f"1 on blue has no available replicas; {said}"
    )


def test_invalid_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="minReplicas must not exceed maxReplicas"):
        make_spec("1", **{"autoscaling.minReplicas": 5, "autoscaling.maxReplicas": 2})
    with pytest.raises(ValueError, match="progressDeadlineSeconds"):
        make_spec("1", **{"rollout.progressDeadlineSeconds": 1})


def test_zero_replicas_parks_the_model_and_stays_parked() -> None:
    """`serving.replicas: 0`: no pods, no HPA, Ready=False Parked; reconciling again changes nothing."""
    cluster = Cluster()
    spec = make_spec("1", **{"autoscaling.enabled": False, "serving.replicas": 0})
    for _ in range(3):
        step = cluster.reconcile(spec)
        cluster.tick()
    assert serving(cluster) == (Color.BLUE, "1")
    assert step.deployments == {Color.BLUE: step.deployments[Color.BLUE]}
    assert step.deployments[Color.BLUE].replicas == 0 and step.hpa_color is None
    assert step.conditions["Ready"].status == "False" and step.conditions["Ready"].reason == "Parked"
    again = cluster.reconcile(spec)
    assert again.deployments == step.deployments and again.events == [] and again.status == step.status


def test_a_parked_model_takes_a_new_version_without_a_preview_to_wait_for() -> None:
    cluster = Cluster()
    parked = {"autoscaling.enabled": False, "serving.replicas": 0}
    cluster.reconcile(make_spec("1", **parked))
    cluster.reconcile(make_spec("1", **parked))
    assert serving(cluster) == (Color.BLUE, "1")
    cluster.reconcile(make_spec("2", **parked))
    cluster.reconcile(make_spec("2", **parked))
    assert serving(cluster) == (Color.GREEN, "2")
    green = cluster.colors[Color.GREEN]
    assert green is not None and green.replicas == 0


def test_unparking_starts_the_fixed_count() -> None:
    cluster = Cluster()
    cluster.reconcile(make_spec("1", **{"autoscaling.enabled": False, "serving.replicas": 0}))
    step = cluster.reconcile(make_spec("1", **{"autoscaling.enabled": False, "serving.replicas": 3}))
    assert step.deployments[Color.BLUE].replicas == 3

"""The blue/green rollout as a pure function: observed state in, the next step out.

Everything the operator knows between reconciles lives in the ForecastModel's status and in its child
Deployments (state lives in the cluster, not in memory), so a restarted operator computes the same step
from the same objects. `now` is an input: deadlines are tested without waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from retail_forecast.operator.resources import Color, ForecastModelSpec

REQUEUE_WHILE_PROGRESSING: Final = 5.0
ConditionStatus = Literal["True", "False", "Unknown"]
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class ColorState:
    """What a colour's Deployment reports (spec, status and labels)."""

    version: str | None
    sha256: str | None
    replicas: int
    ready: int = 0
    available: int = 0
    updated: int = 0
    generation: int = 1
    observed_generation: int = 0
    deadline_exceeded: bool = False

    @property
    def is_available(self) -> bool:
        """All replicas of the current template are ready and available: Kubernetes' own notion."""
        return (
            self.replicas > 0
            and self.observed_generation >= self.generation
            and min(self.updated, self.ready, self.available) >= self.replicas
        )

    @property
    def serves(self) -> bool:
        """At least one replica is available: the colour answers (an HPA scale-up adds pods later)."""
        return self.available > 0


@dataclass(frozen=True)
class RolloutStatus:
    """The rollout fields of the ForecastModel's status."""

    active_color: Color | None = None
    active_version: str | None = None
    active_sha256: str | None = None
    preview_color: Color | None = None
    preview_version: str | None = None
    preview_started: float | None = None
    retired_color: Color | None = None
    retire_at: float | None = None
    failed_version: str | None = None
    failed_reason: str | None = None  # what the failed preview's pods said (`pods.why_unavailable`)


@dataclass(frozen=True)
class DeploymentIntent:
    """A colour's Deployment should serve `version`; `replicas` None leaves the count to the HPA."""

    version: str
    sha256: str
    replicas: int | None


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Condition:
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class Step:
    """What should exist after this reconcile, and what to report."""

    deployments: dict[Color, DeploymentIntent]
    scale_to_zero: frozenset[Color]
    service_color: Color
    preview_color: Color | None
    hpa_color: Color | None
    status: RolloutStatus
    conditions: dict[str, Condition]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    # Colours this step reports as not available (a preview rolled back, an active colour with no
    # available replica): their pods say why, so the reconciler reads them and asks again with
    # `pods_say` (only then: a healthy resource costs no pod reads).
    failing: frozenset[Color] = frozenset()

    @property
    def name(self) -> str:
        """The rollout step, for the log: a preview runs, traffic moved and the old colour waits out
        its scale-down delay, or nothing moves."""
        if self.status.preview_color is not None:
            return "preview"
        if self.status.retired_color is not None:
            return "scale-down-delay"
        return "steady" if self.status.active_color is not None else "no-active-version"


def parked(spec: ForecastModelSpec) -> bool:
    """`serving.replicas: 0` with autoscaling off: the model stays deployed with no pods and no HPA."""
    return not spec.autoscaling.enabled and spec.serving.replicas == 0


def serving_replicas(spec: ForecastModelSpec, current: ColorState | None) -> int | None:
    """The one decision of the active colour's replica count; None leaves it to the HPA.

    Autoscaling off: the fixed count (0 parks the model). Autoscaling on: the HPA's, except for a colour
    that has no pods (new, retained at 0, or a deleted Deployment), which starts at the HPA's floor.
    """
    if not spec.autoscaling.enabled:
        return spec.serving.replicas
    if current is None or current.replicas == 0:
        return spec.autoscaling.min_replicas
    return None


def preview_replicas(spec: ForecastModelSpec, active: ColorState | None) -> int:
    """A preview starts with the capacity that serves now (or the spec's), so promotion loses none."""
    if parked(spec):
        return 0
    return max(spec.replicas, active.replicas if active is not None else 0)


def _promote(
    status: RolloutStatus, to: Color, *, version: str, sha256: str, now: float, delay: float, how: str
) -> tuple[RolloutStatus, Event]:
    """Traffic moves to `to`; the colour that served until now is retired after `delay` seconds."""
    retired = status.active_color if status.active_color is not to else None
    promoted = RolloutStatus(
        active_color=to,
        active_version=version,
        active_sha256=sha256,
        retired_color=retired,
        retire_at=now + delay if retired is not None else None,
    )
    # activeVersion=/activeColor= are read by infra/monitor/kql (served_versions, rollouts).
    message = f"{version} on {to} {how}: activeVersion={version} activeColor={to.value}"
    return promoted, Event("Normal", "Promoted", message)


def next_step(
    spec: ForecastModelSpec,
    sha256: str,
    status: RolloutStatus,
    colors: dict[Color, ColorState | None],
    now: float,
    *,
    promote_requested: bool = False,
    pods_say: Mapping[Color, str] | None = None,
) -> Step:
    """The next rollout step toward serving `spec.model.version` (already verified, bytes `sha256`).

    `pods_say`: why a colour of `Step.failing` is not available, in its pods' words; None before they
    were read.
    """
    version = spec.model.version
    said = pods_say or {}
    events: list[Event] = []
    zero: set[Color] = set()
    failing: set[Color] = set()
    deployments: dict[Color, DeploymentIntent] = {}
    autoscale = spec.autoscaling.enabled

    active = status.active_color
    if active is not None and status.active_version == version:
        # Steady state, or the spec went back to the serving version during a preview: drop the preview.
        if status.preview_color is not None:
            zero.add(status.preview_color)
            events.append(
                Event(
                    "Normal",
                    "RolloutAbandoned",
                    f"preview of {status.preview_version} dropped: the spec asks for {version} again",
                )
            )
            status = replace(status, preview_color=None, preview_version=None, preview_started=None)
        status = replace(status, failed_version=None, failed_reason=None)
    elif status.failed_version == version:
        pass  # this version already failed its preview: wait for a new spec, never retry it on our own
    else:
        target = active.other if active is not None else Color.BLUE
        retained = colors.get(target)
        if (
            active is not None
            and status.preview_version != version
            and retained is not None
            and retained.version == version
            and retained.sha256 == sha256
            and retained.is_available
        ):
            # Rollback to the retained colour: it still runs the version, so switch without a rollout.
            status, promoted = _promote(
                status,
                target,
                version=version,
                sha256=sha256,
                now=now,
                delay=spec.rollout.scale_down_delay_seconds,
                how="(retained) serves traffic again",
            )
            events.append(promoted)
        else:
            if status.preview_version != version or status.preview_color != target:
                events.append(
                    Event("Normal", "RolloutStarted", f"deploying {version} to {target} for preview")
                )
                status = replace(
                    status,
                    preview_color=target,
                    preview_version=version,
                    preview_started=now,
                    failed_version=None,
                    failed_reason=None,
                )
            active_state = colors.get(active) if active is not None else None
            deployments[target] = DeploymentIntent(version, sha256, preview_replicas(spec, active_state))
            preview = colors.get(target)
            # A parked model has nothing to wait for: its new version is promoted as soon as it exists.
            ready = (
                preview is not None and preview.version == version and (parked(spec) or preview.is_available)
            )
            started = status.preview_started if status.preview_started is not None else now
            expired = now >= started + spec.rollout.progress_deadline_seconds or (
                preview is not None and preview.version == version and preview.deadline_exceeded
            )
            if ready and (spec.rollout.auto_promote or promote_requested or active is None):
                status, promoted = _promote(
                    status,
                    target,
                    version=version,
                    sha256=sha256,
                    now=now,
                    delay=spec.rollout.scale_down_delay_seconds,
                    how="is available and serves traffic",
                )
                events.append(promoted)
            elif expired and not ready:
                del deployments[target]
                zero.add(target)
                failing.add(target)
                events.append(
                    Event(
                        "Warning",
                        "RolledBack",
                        _because(
                            f"{version} on {target} was not available within "
                            f"{spec.rollout.progress_deadline_seconds}s; scaled to zero"
                            + (f", {status.active_version} on {active} keeps serving" if active else ""),
                            said.get(target),
                        ),
                    )
                )
                status = replace(
                    status,
                    preview_color=None,
                    preview_version=None,
                    preview_started=None,
                    failed_version=version,
                    failed_reason=said.get(target),
                )

    active = status.active_color
    if active is not None and status.active_version is not None and status.active_sha256 is not None:
        keep = serving_replicas(spec, colors.get(active))
        deployments.setdefault(active, DeploymentIntent(status.active_version, status.active_sha256, keep))

    requeue: float | None = None
    retire_at = status.retire_at
    if status.retired_color is not None and retire_at is not None:
        if now >= retire_at:
            zero.add(status.retired_color)
            status = replace(status, retired_color=None, retire_at=None)
        else:
            requeue = retire_at - now
    if status.preview_color is not None and status.preview_started is not None:
        remaining = status.preview_started + spec.rollout.progress_deadline_seconds - now
        requeue = min(x for x in (requeue, REQUEUE_WHILE_PROGRESSING, max(remaining, 0.0)) if x is not None)
    zero -= set(deployments)

    service_color = status.active_color or status.preview_color or Color.BLUE
    if status.active_color is not None and _unavailable(status, colors, parked=parked(spec)):
        failing.add(status.active_color)
    return Step(
        deployments=deployments,
        scale_to_zero=frozenset(zero),
        service_color=service_color,
        preview_color=status.preview_color,
        hpa_color=status.active_color if autoscale and status.active_color is not None else None,
        status=status,
        conditions=_conditions(
            status,
            colors,
            version,
            spec.rollout.auto_promote or promote_requested,
            parked=parked(spec),
            pods_say=said,
        ),
        events=events,
        requeue_after=requeue,
        failing=frozenset(failing),
    )


def _because(message: str, reason: str | None) -> str:
    """`message; <what the pods said>`, within the 1000 characters of a condition's message."""
    return (message if reason is None else f"{message}; {reason}")[:1000]


def _unavailable(status: RolloutStatus, colors: dict[Color, ColorState | None], *, parked: bool) -> bool:
    """A version was promoted and is not parked, yet its colour has no available replica."""
    if status.active_version is None or parked:
        return False
    active = colors.get(status.active_color) if status.active_color is not None else None
    return not (active is not None and active.serves and active.version == status.active_version)


def _conditions(
    status: RolloutStatus,
    colors: dict[Color, ColorState | None],
    version: str,
    promoting: bool,
    *,
    parked: bool,
    pods_say: Mapping[Color, str],
) -> dict[str, Condition]:
    serving = status.active_version
    if parked and serving is not None:
        ready = Condition(
            "False", "Parked", f"{serving} on {status.active_color} is parked: serving.replicas is 0"
        )
    elif _unavailable(status, colors, parked=parked):
        message = f"{serving} on {status.active_color} has no available replicas"
        said = pods_say.get(status.active_color) if status.active_color is not None else None
        ready = Condition("False", "Unavailable", _because(message, said))
    elif serving is not None:
        ready = Condition("True", "Available", f"{serving} on {status.active_color} serves traffic")
    else:
        ready = Condition("False", "NoActiveVersion", "no version has been promoted yet")
    if status.preview_version is not None:
        preview = colors.get(status.preview_color) if status.preview_color is not None else None
        waiting = not promoting and preview is not None and preview.is_available
        progressing = Condition(
            "True",
            "AwaitingPromotion" if waiting else "RolloutInProgress",
            f"{status.preview_version} on {status.preview_color}"
            + (" is available; promote it or set autoPromote" if waiting else " is starting"),
        )
    else:
        progressing = Condition("False", "Idle", "no rollout in progress")
    if status.failed_version == version:
        degraded = Condition(
            "True",
            "ProgressDeadlineExceeded",
            _because(
                f"{version} never became available"
                + ("; the previous version keeps serving" if serving is not None else ""),
                status.failed_reason,
            ),
        )
    else:
        degraded = Condition("False", "Healthy", "no failed rollout")
    return {"Ready": ready, "Progressing": progressing, "Degraded": degraded}

"""One reconcile of one ForecastModel: observe, verify, compute the step (pure), write only differences.

Nothing here keeps state between calls: the rollout lives in `.status` and in the child Deployments,
so a restarted operator continues where the last one stopped. An unchanged resource costs reads only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from retail_forecast.core.manifest import ManifestError
from retail_forecast.core.store import (
    StoreAccessDeniedError,
    StoreConfigError,
    StoreError,
    VersionNotFoundError,
    open_store,
)
from retail_forecast.operator import batch as batch_runs
from retail_forecast.operator import resources as res
from retail_forecast.operator.failures import (
    Failure,
    api_failure,
    retry_delay,
    unexpected_failure,
    visible,
)
from retail_forecast.operator.kube import ApiError, Conflict, Kube, NotFound
from retail_forecast.operator.pods import why_unavailable
from retail_forecast.operator.rollout import ColorState, Condition, Event, RolloutStatus, Step, next_step

PROMOTE_ANNOTATION: Final = f"{res.GROUP}/promote"
RECONCILED: Final = Condition("True", "Applied", "every child matches the spec")
EventSink = Callable[[Event], None]
# One JSON line per decision and per write (kopf's JSON formatter, `main.py`): the ForecastModel in
# `object`, and what was decided or written. Field names and paths only: never values (env may hold
# secrets).
logger = logging.getLogger("retail_forecast.operator")


def _ref(namespace: str, name: str) -> dict[str, Any]:
    return {
        "k8s_ref": {
            "apiVersion": f"{res.GROUP}/{res.VERSION}",
            "kind": res.KIND,
            "namespace": namespace,
            "name": name,
        }
    }


def _intent(body: dict[str, Any]) -> str:
    """What a user asks of a ForecastModel: its spec and a promotion (not its status)."""
    annotations = body["metadata"].get("annotations") or {}
    return json.dumps([body.get("spec"), annotations.get(PROMOTE_ANNOTATION)], sort_keys=True)


def _child(
    namespace: str, kind: str, name: str, write: str, changed: list[str] | None = None
) -> dict[str, Any]:
    owner = name.removesuffix("-blue").removesuffix("-green").removesuffix("-preview").removesuffix("-batch")
    found: dict[str, Any] = {**_ref(namespace, owner), "child": {"kind": kind, "name": name}, "write": write}
    if changed is not None:
        found["changed"] = changed
    return found


def changed_fields(current: Any, wanted: Any, path: str = "", limit: int = 20) -> list[str]:
    """The paths of `wanted` that `current` does not hold (as the apply's intent sees them): for the
    log, so paths only, never values."""
    if isinstance(wanted, dict) and isinstance(current, dict):
        found: list[str] = []
        for key, value in wanted.items():
            found += changed_fields(current.get(key), value, f"{path}.{key}" if path else key, limit)
            if len(found) >= limit:
                return found[:limit]
        return found
    return [] if res.contains(current, wanted) else [path or "(all)"]


class Failed(Exception):  # noqa: N818 - carries a Failure, as the reconcile's outcome
    """This attempt failed; `failures.py` decides when to retry and whether the status shows it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class Verified:
    version: str
    sha256: str


def verify_model(spec: res.ForecastModelSpec) -> Verified:
    """The version exists, its manifest is complete, and it matches the pin. Blocking: run in a thread.

    Raises Failed: a verdict on the spec or the store's credentials (permanent), or an outage (transient).
    """
    try:
        manifest = open_store(spec.model.store_uri).manifest(spec.model.name, spec.model.version)
    except (VersionNotFoundError, StoreConfigError, ManifestError) as exc:
        raise Failed(store_failure("ModelVerificationFailed", exc, transient=False)) from None
    except StoreAccessDeniedError as exc:  # a wrong key, or a role assignment not (yet) granted
        raise Failed(store_failure("StoreAccessDenied", exc, transient=False)) from None
    except StoreError as exc:  # unreachable, or an error answer (5xx): retried with backoff
        raise Failed(store_failure("StoreUnavailable", exc, transient=True)) from None
    if spec.model.sha256 is not None and manifest.sha256 != spec.model.sha256:
        message = (
            f"{spec.model.name} {spec.model.version}: the manifest names sha256 {manifest.sha256}, "
            f"the ForecastModel pins {spec.model.sha256}"
        )
        raise Failed(Failure("ModelVerified", "ModelVerificationFailed", message, transient=False))
    return Verified(manifest.version, manifest.sha256)


def store_failure(reason: str, exc: Exception, *, transient: bool) -> Failure:
    return Failure("ModelVerified", reason, str(exc)[:1000], transient=transient)


def color_state(deployment: dict[str, Any]) -> ColorState:
    meta, spec, status = deployment["metadata"], deployment.get("spec", {}), deployment.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    progressing = conditions.get("Progressing", {})
    return ColorState(
        version=meta.get("labels", {}).get(res.LABEL_VERSION),
        sha256=meta.get("annotations", {}).get(res.ANNOTATION_SHA256),
        replicas=int(spec.get("replicas", 1)),
        ready=int(status.get("readyReplicas", 0)),
        available=int(status.get("availableReplicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        generation=int(meta.get("generation", 1)),
        observed_generation=int(status.get("observedGeneration", 0)),
        deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
    )


def rollout_status(status: dict[str, Any]) -> RolloutStatus:
    saved = status.get("rollout", {})

    def color(value: Any) -> res.Color | None:
        return res.Color(value) if value in {"blue", "green"} else None

    return RolloutStatus(
        active_color=color(status.get("activeColor")),
        active_version=status.get("activeVersion"),
        active_sha256=status.get("modelSha256"),
        preview_color=color(status.get("previewColor")),
        preview_version=status.get("previewVersion"),
        preview_started=saved.get("previewStarted"),
        retired_color=color(saved.get("retiredColor")),
        retire_at=saved.get("retireAt"),
        failed_version=saved.get("failedVersion"),
        failed_reason=saved.get("failedReason"),
    )


def _conditions(
    old: list[dict[str, Any]], new: dict[str, Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    previous = {c.get("type"): c for c in old}
    merged = []
    for kind in ("Ready", "Progressing", "Degraded", "ModelVerified", "Reconciled", batch_runs.CONDITION):
        if kind not in new:
            if kind in previous:
                merged.append(previous[kind])
            continue
        cond = new[kind]
        before = previous.get(kind, {})
        changed = before.get("status") != cond.status
        merged.append(
            {
                "type": kind,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": now
                if changed or "lastTransitionTime" not in before
                else before["lastTransitionTime"],
                "observedGeneration": generation,
            }
        )
    return merged


def new_status(
    body: dict[str, Any], step: Step | None, conditions: dict[str, Condition], namespace: str, name: str
) -> dict[str, Any]:
    old = dict(body.get("status") or {})
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    status: dict[str, Any] = {k: v for k, v in old.items() if k not in {"conditions"}}
    if step is not None:
        s = step.status
        status.update(
            {
                "activeColor": s.active_color.value if s.active_color else None,
                "activeVersion": s.active_version,
                "active": f"{s.active_color.value}/{s.active_version}" if s.active_color else None,
                "previewColor": s.preview_color.value if s.preview_color else None,
                "previewVersion": s.preview_version,
                "modelSha256": s.active_sha256,
                "endpoint": f"{name}.{namespace}.svc",
                "rollout": {
                    "previewStarted": s.preview_started,
                    "retiredColor": s.retired_color.value if s.retired_color else None,
                    "retireAt": s.retire_at,
                    "failedVersion": s.failed_version,
                    "failedReason": s.failed_reason,
                },
            }
        )
    status["observedGeneration"] = body["metadata"].get("generation", 1)
    status["conditions"] = _conditions(
        old.get("conditions", []), {**conditions}, status["observedGeneration"], now
    )
    return status


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal once nulls (deletions in a merge patch) are dropped; transition times follow the status."""

    def canonical(status: dict[str, Any]) -> str:
        return json.dumps(_without_nulls(status), sort_keys=True, default=str)

    return canonical(old) == canonical(new)


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": f"{res.GROUP}/{res.VERSION}",
        "kind": res.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        emit: Callable[[dict[str, Any], Event], None],
        clock: Callable[[], float] = time.time,
    ):
        self.kube = kube
        self.emit = emit
        self.clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        self._backoff: dict[tuple[str, str], tuple[float, str]] = {}  # until (monotonic), the intent
        self._attempted: dict[tuple[str, str], str] = {}  # the intent the running attempt acts on

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Serialised per resource (watch events of the resource and of its Deployments may coincide).

        Returns when to look again (a preview deadline, a scale-down delay, or the retry of a failure),
        or None. Never raises for a failure: it is logged, retried, and shown on the status when it is
        permanent or lasts (`failures.py`).
        """
        key = (namespace, name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            try:
                held = self._backoff.get(key)
                if held is not None:
                    # Backing off: only a new intent (spec, promotion) is worth an attempt before the
                    # retry; our own status write or a child's status change is not.
                    body = await self.kube.get(res.GROUP, res.VERSION, res.PLURAL, namespace, name)
                    remaining = held[0] - time.monotonic()
                    if body is not None and remaining > 0 and _intent(body) == held[1]:
                        return remaining
                again = await self._reconcile_through_conflicts(namespace, name)
            except Failed as exc:
                return await self._failed(namespace, name, exc.failure)
            except ApiError as exc:
                failure = api_failure(exc.status, exc.reason, exc.message, exc.request, exc.retry_after)
                return await self._failed(namespace, name, failure)
            except Exception as exc:  # a bug: shown and retried like a permanent failure, not dropped
                logger.exception("reconcile of %s/%s raised", namespace, name, extra=_ref(namespace, name))
                return await self._failed(namespace, name, unexpected_failure(exc))
            self._attempts.pop(key, None)
            self._backoff.pop(key, None)
            self._attempted.pop(key, None)
            return again

    async def _reconcile_through_conflicts(self, namespace: str, name: str) -> float | None:
        for _ in range(5):  # a 409 on the status means someone wrote first: read again and redo
            try:
                return await self._reconcile_once(namespace, name)
            except Conflict as exc:
                last = exc
        raise last

    async def _failed(self, namespace: str, name: str, failure: Failure) -> float:
        """Log the failure, show it on the status if it is permanent or lasts, and say when to retry."""
        key = (namespace, name)
        attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        delay = retry_delay(failure, attempt)
        shown = visible(failure, attempt)
        logger.warning(
            "%s %s/%s failed (attempt %d), retry in %.0fs: %s",
            failure.reason,
            namespace,
            name,
            attempt,
            delay,
            failure.message,
            extra={
                **_ref(namespace, name),
                "failure": {
                    "condition": failure.condition,
                    "reason": failure.reason,
                    "transient": failure.transient,
                    "attempt": attempt,
                    "retryInSeconds": delay,
                    "shown": shown,
                },
            },
        )
        body: dict[str, Any] | None = None
        with contextlib.suppress(ApiError):  # the API server itself is failing: the retry reads again
            body = await self.kube.get(res.GROUP, res.VERSION, res.PLURAL, namespace, name)
        # Held back is the intent this attempt acted on, not the one read now: a spec changed while the
        # attempt failed has not been tried, and its watch event must reconcile at once, not after the delay.
        attempted = self._attempted.pop(key, None)
        if attempted is None and body is not None:  # the attempt failed before it read the object
            attempted = _intent(body)
        if attempted is not None:
            self._backoff[key] = (time.monotonic() + delay, attempted)
        if shown and body is not None:
            condition = Condition("False", failure.reason, failure.message)
            status = new_status(body, None, {failure.condition: condition}, namespace, name)
            try:
                # One Warning Event per change of the condition: a retry that fails alike writes nothing.
                await self._write_status(body, status, [Event("Warning", failure.reason, failure.message)])
            except ApiError as exc:  # the API server itself is failing: the retry will try again
                logger.warning(
                    "status of %s/%s not written: %s", namespace, name, exc, extra=_ref(namespace, name)
                )
        return delay

    async def _reconcile_once(self, namespace: str, name: str) -> float | None:
        body = await self.kube.get(res.GROUP, res.VERSION, res.PLURAL, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # deleted: owner references let the garbage collector remove the children
        self._attempted[(namespace, name)] = _intent(body)
        try:
            spec = res.ForecastModelSpec.model_validate(body.get("spec", {}))
        except ValidationError as exc:
            await self._report(
                body,
                None,
                {"ModelVerified": Condition("False", "InvalidSpec", str(exc)[:1000])},
                [Event("Warning", "InvalidSpec", str(exc)[:1000])],
                None,
            )
            return None
        verified = await self._verify(body, spec)
        verified_condition = Condition(
            "True", "Verified", f"{spec.model.name} {verified.version} sha256 {verified.sha256}"
        )
        deployments = await self.kube.list("apps", "v1", "deployments", namespace, res.labels(name))
        existing = {
            res.Color(d["metadata"]["labels"][res.LABEL_COLOR]): d
            for d in deployments
            if d["metadata"].get("labels", {}).get(res.LABEL_COLOR) in {"blue", "green"}
        }
        colors: dict[res.Color, ColorState | None] = {
            c: color_state(existing[c]) if c in existing else None for c in res.Color
        }
        promote = (body["metadata"].get("annotations") or {}).get(PROMOTE_ANNOTATION) == spec.model.version
        saved, now = rollout_status(body.get("status") or {}), self.clock()
        step = next_step(spec, verified.sha256, saved, colors, now, promote_requested=promote)
        if step.failing:  # it reports a colour not available: its pods say why
            said = await self._pods_say(namespace, name, step.failing, existing)
            step = next_step(
                spec, verified.sha256, saved, colors, now, promote_requested=promote, pods_say=said
            )
        logger.info(
            "%s/%s: %s",
            namespace,
            name,
            step.name,
            extra={**_ref(namespace, name), "step": step.name, "events": [e.reason for e in step.events]},
        )
        await self._apply(body, spec, step, existing)
        await self._apply_batch(body, spec, step)
        batch = await self._batch_report(body, spec)
        conditions = {**step.conditions, "ModelVerified": verified_condition, "Reconciled": RECONCILED}
        if batch.condition is not None:
            conditions[batch_runs.CONDITION] = batch.condition
        await self._report(body, step, conditions, [*step.events, *batch.events], verified, batch)
        return step.requeue_after

    async def _pods_say(
        self,
        namespace: str,
        name: str,
        failing: frozenset[res.Color],
        existing: dict[res.Color, dict[str, Any]],
    ) -> dict[res.Color, str]:
        """Why each of the `failing` colours is not available, from one list of the model's serving pods
        (RBAC: `list` pods, as for the batch runs)."""
        pods = await self.kube.list("", "v1", "pods", namespace, res.model_pod_labels(name))
        return {
            color: why_unavailable(
                [p for p in pods if (p["metadata"].get("labels") or {}).get(res.LABEL_COLOR) == color.value],
                existing.get(color),
            )
            for color in sorted(failing)
        }

    async def _apply_batch(self, body: dict[str, Any], spec: res.ForecastModelSpec, step: Step) -> None:
        """The CronJob runs the active version only: none before a version is active, and it follows a
        promotion or a rollback when `activeVersion` changes (never a preview)."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        active, sha256 = step.status.active_version, step.status.active_sha256
        if spec.batch is None or active is None or sha256 is None:
            await self._delete_if_present(namespace, "batch", "v1", "cronjobs", res.cronjob_name(name))
            return
        desired = res.cronjob(name, spec, version=active, sha256=sha256)
        await self._ensure(namespace, "batch", "v1", "cronjobs", desired, None, owner_reference(body))

    async def _batch_report(
        self, body: dict[str, Any], spec: res.ForecastModelSpec
    ) -> batch_runs.BatchReport:
        if spec.batch is None:
            return batch_runs.BatchReport(None, None, [])
        meta = body["metadata"]
        jobs = await self.kube.list("batch", "v1", "jobs", meta["namespace"], res.batch_labels(meta["name"]))
        run, previous = batch_runs.newest_finished(jobs), (body.get("status") or {}).get("batch")
        pods = None
        if run is not None and batch_runs.needs_pods(run, previous):
            pods = await self.kube.list("", "v1", "pods", meta["namespace"], {res.JOB_NAME_LABEL: run.name})
        return batch_runs.last_run(run, previous, pods)

    async def _verify(self, body: dict[str, Any], spec: res.ForecastModelSpec) -> Verified:
        status = body.get("status") or {}
        known = status.get("verified") or {}
        key = {
            "storeUri": spec.model.store_uri,
            "name": spec.model.name,
            "version": spec.model.version,
            "pin": spec.model.sha256,
        }
        if known.get("key") == key and known.get("sha256"):
            return Verified(spec.model.version, known["sha256"])  # the store was read for this exact spec
        return await asyncio.to_thread(verify_model, spec)

    async def _apply(
        self,
        body: dict[str, Any],
        spec: res.ForecastModelSpec,
        step: Step,
        existing: dict[res.Color, dict[str, Any]],
    ) -> None:
        """Traffic first: the Deployments that serve, then the Services and the HPA that point at them,
        and only then the scale-down of the colour that no longer serves and the deletion of what is no
        longer wanted (the preview Service after a rollout, the HPA when autoscaling is off)."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        owner = owner_reference(body)
        for color, intent in step.deployments.items():
            desired = res.deployment(
                name, color, spec, version=intent.version, sha256=intent.sha256, replicas=intent.replicas
            )
            await self._hand_replicas_to_the_hpa(namespace, desired, existing.get(color))
            await self._ensure(namespace, "apps", "v1", "deployments", desired, existing.get(color), owner)
        await self._ensure(
            namespace, "", "v1", "services", res.service(name, name, step.service_color), None, owner
        )
        preview_name = res.preview_service_name(name)
        if step.preview_color is not None:
            preview = res.service(name, preview_name, step.preview_color)
            await self._ensure(namespace, "", "v1", "services", preview, None, owner)
        if step.hpa_color is not None:
            hpa = res.hpa(name, step.hpa_color, spec)
            await self._ensure(namespace, "autoscaling", "v2", "horizontalpodautoscalers", hpa, None, owner)
        for color in sorted(step.scale_to_zero):
            current = existing.get(color)
            labels = current["metadata"].get("labels", {}) if current is not None else {}
            sha256 = (
                current["metadata"].get("annotations", {}).get(res.ANNOTATION_SHA256) if current else None
            )
            if current is None or res.LABEL_VERSION not in labels or sha256 is None:
                continue  # not ours to render (gone, or not made by us): nothing to scale down
            retired = res.deployment(
                name, color, spec, version=labels[res.LABEL_VERSION], sha256=sha256, replicas=0
            )
            await self._ensure(namespace, "apps", "v1", "deployments", retired, current, owner)
        if step.preview_color is None:
            await self._delete_if_present(namespace, "", "v1", "services", preview_name)
        if step.hpa_color is None:
            await self._delete_if_present(namespace, "autoscaling", "v2", "horizontalpodautoscalers", name)

    async def _hand_replicas_to_the_hpa(
        self, namespace: str, desired: dict[str, Any], current: dict[str, Any] | None
    ) -> None:
        """Before an intent without `replicas` is applied over one that set it, another field manager
        takes the field at its current value: an apply that drops a field it alone owned resets it to
        the default (1 replica), where the HPA should continue from the current count."""
        if "replicas" in desired["spec"] or not res.manages_replicas(current, res.MANAGER):
            return
        assert current is not None
        # The count is the one this reconcile read; resourceVersion makes the apply a precondition, so a
        # scale that landed since (the HPA, a user) is a 409 and the retry reads it, never undoes it.
        keep = {
            "apiVersion": desired["apiVersion"],
            "kind": desired["kind"],
            "metadata": {
                "name": desired["metadata"]["name"],
                "resourceVersion": current["metadata"]["resourceVersion"],
            },
            "spec": {"replicas": int(current["spec"].get("replicas", 1))},
        }
        await self.kube.apply(
            "apps", "v1", "deployments", namespace, keep, field_manager=res.HANDOVER_MANAGER
        )
        name = keep["metadata"]["name"]
        handover = _child(namespace, "Deployment", name, "apply", ["spec.replicas (handed to the HPA)"])
        logger.info("Deployment %s: replicas handed over", name, extra=handover)

    async def _ensure(
        self,
        namespace: str,
        group: str,
        version: str,
        plural: str,
        desired: dict[str, Any],
        current: dict[str, Any] | None,
        owner: dict[str, Any],
    ) -> None:
        """Server-side apply of the whole intent when it changed or was edited; otherwise write nothing."""
        intent = res.owned(desired, owner)
        if current is None:
            current = await self.kube.get(group, version, plural, namespace, desired["metadata"]["name"])
        kind, name = intent["kind"], intent["metadata"]["name"]
        if not res.needs_apply(intent, current):
            logger.debug("%s %s unchanged", kind, name, extra=_child(namespace, kind, name, "unchanged"))
            return
        changed = ["(new)"] if current is None else changed_fields(current, intent)
        await self.kube.apply(group, version, plural, namespace, intent)
        logger.info("%s %s applied", kind, name, extra=_child(namespace, kind, name, "apply", changed))

    async def _delete_if_present(
        self, namespace: str, group: str, version: str, plural: str, name: str
    ) -> None:
        """Delete a child we made that the spec no longer wants (a read first: absent costs no write)."""
        current = await self.kube.get(group, version, plural, namespace, name)
        if (
            current is None
            or (current["metadata"].get("labels") or {}).get(res.LABEL_MANAGED_BY) != res.MANAGER
        ):
            return
        await self.kube.delete(group, version, plural, namespace, name)
        kind = current.get("kind") or plural
        logger.info("%s %s deleted", kind, name, extra=_child(namespace, kind, name, "delete"))

    async def _report(
        self,
        body: dict[str, Any],
        step: Step | None,
        conditions: dict[str, Condition],
        events: list[Event],
        verified: Verified | None,
        batch: batch_runs.BatchReport | None = None,
    ) -> None:
        meta = body["metadata"]
        status = new_status(body, step, conditions, meta["namespace"], meta["name"])
        if batch is not None:  # None: the spec did not validate, so the last run stays as shown
            status["batch"] = batch.status
            if batch.condition is None:  # no batch, or no run finished yet: no verdict to show
                status["conditions"] = [c for c in status["conditions"] if c["type"] != batch_runs.CONDITION]
        status["verified"] = None
        if verified is not None:
            # Only a spec that validated gets here: an invalid one may have no model at all.
            model = body["spec"]["model"]
            status["verified"] = {
                "key": {
                    "storeUri": model["storeUri"],
                    "name": model["name"],
                    "version": model["version"],
                    "pin": model.get("sha256"),
                },
                "sha256": verified.sha256,
            }
        await self._write_status(body, status, events)

    async def _write_status(self, body: dict[str, Any], status: dict[str, Any], events: list[Event]) -> None:
        """Write the status if it changed, then post the events of that change (never otherwise)."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        old = body.get("status") or {}
        if _same(old, status):
            # Events report transitions, and every transition changes the status: an unchanged status
            # means this was already reported (by us before a restart, or a moment ago).
            return
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            try:
                await self.kube.patch_status(res.GROUP, res.VERSION, res.PLURAL, namespace, name, patch)
            except Conflict:
                fresh = await self.kube.get(res.GROUP, res.VERSION, res.PLURAL, namespace, name)
                if fresh is None or not _same(fresh.get("status") or {}, old):
                    raise  # another writer changed the status: decide again from what it wrote
                # Only the spec or metadata moved on (a new version, say, while a promotion was being
                # applied). The children already show this step, so its status is still their record:
                # decided again instead, a promotion's Service, HPA and CronJob were left unrecorded
                # and the next step re-pointed the colour serving traffic at the new version. It is
                # written as of the generation it was computed from; the new intent's event comes next.
                patch["metadata"]["resourceVersion"] = fresh["metadata"]["resourceVersion"]
                await self.kube.patch_status(res.GROUP, res.VERSION, res.PLURAL, namespace, name, patch)
        except NotFound:
            return
        logger.info(
            "status of %s/%s written",
            namespace,
            name,
            extra={
                **_ref(namespace, name),
                "write": "status",
                "changed": changed_fields(old, _without_nulls(status)),
                "events": [e.reason for e in events],
            },
        )
        for event in events:
            self.emit(body, event)

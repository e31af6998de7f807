"""One reconcile of one ForecastModel: observe, verify, compute the step (pure), write only differences.

Nothing here keeps state between calls: the rollout lives in `.status` and in the child Deployments,
so a restarted operator continues where the last one stopped. An unchanged resource costs reads only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from retail_forecast.core.manifest import ManifestError
from retail_forecast.core.store import (
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
    VersionNotFoundError,
    open_store,
)
from retail_forecast.operator import resources as res
from retail_forecast.operator.kube import Conflict, Kube, NotFound
from retail_forecast.operator.rollout import ColorState, Condition, Event, RolloutStatus, Step, next_step

PROMOTE_ANNOTATION: Final = f"{res.GROUP}/promote"
EventSink = Callable[[Event], None]


class TransientError(Exception):
    """Retry later with backoff (the model store is unreachable)."""


@dataclass(frozen=True)
class Verified:
    version: str
    sha256: str


def verify_model(spec: res.ForecastModelSpec) -> Verified:
    """The version exists, its manifest is complete, and it matches the pin. Blocking: run in a thread."""
    try:
        manifest = open_store(spec.model.store_uri).manifest(spec.model.name, spec.model.version)
    except (VersionNotFoundError, StoreConfigError):
        raise  # a verdict on the spec: reported on the status
    except (StoreUnavailableError, StoreError) as exc:
        # Unreachable, or an error answer (403 while a role assignment propagates, 5xx): retry with
        # backoff. Anything escaping to kopf would be logged and dropped until the next watch event.
        raise TransientError(str(exc)) from None
    if spec.model.sha256 is not None and manifest.sha256 != spec.model.sha256:
        raise ManifestError(
            f"{spec.model.name} {spec.model.version}: the manifest names sha256 {manifest.sha256}, "
            f"the ForecastModel pins {spec.model.sha256}"
        )
    return Verified(manifest.version, manifest.sha256)


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
    )


def _conditions(
    old: list[dict[str, Any]], new: dict[str, Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    previous = {c.get("type"): c for c in old}
    merged = []
    for kind in ("Ready", "Progressing", "Degraded", "ModelVerified"):
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

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Serialised per resource (watch events of the resource and of its Deployments may coincide).

        Returns when to look again (a preview deadline or a scale-down delay), or None.
        """
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            for _ in range(5):  # a 409 on the status means someone wrote first: read again and redo
                try:
                    return await self._reconcile_once(namespace, name)
                except Conflict:
                    continue
            raise TransientError(f"{namespace}/{name}: status kept changing under us")

    async def _reconcile_once(self, namespace: str, name: str) -> float | None:
        body = await self.kube.get(res.GROUP, res.VERSION, res.PLURAL, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # deleted: owner references let the garbage collector remove the children
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
        try:
            verified = await self._verify(body, spec)
        except (VersionNotFoundError, ManifestError, ValueError) as exc:
            reason = "ModelVerificationFailed"
            await self._report(
                body,
                None,
                {"ModelVerified": Condition("False", reason, str(exc)[:1000])},
                [Event("Warning", reason, str(exc)[:1000])],
                None,
            )
            return None
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
        step = next_step(
            spec,
            verified.sha256,
            rollout_status(body.get("status") or {}),
            colors,
            self.clock(),
            promote_requested=promote,
        )
        await self._apply(body, spec, step, existing)
        await self._report(
            body, step, {**step.conditions, "ModelVerified": verified_condition}, step.events, verified
        )
        return step.requeue_after

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
        keep = {
            "apiVersion": desired["apiVersion"],
            "kind": desired["kind"],
            "metadata": {"name": desired["metadata"]["name"]},
            "spec": {"replicas": int(current["spec"].get("replicas", 1))},
        }
        await self.kube.apply(
            "apps", "v1", "deployments", namespace, keep, field_manager=res.HANDOVER_MANAGER
        )

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
        if res.needs_apply(intent, current):
            await self.kube.apply(group, version, plural, namespace, intent)

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

    async def _report(
        self,
        body: dict[str, Any],
        step: Step | None,
        conditions: dict[str, Condition],
        events: list[Event],
        verified: Verified | None,
    ) -> None:
        meta = body["metadata"]
        status = new_status(body, step, conditions, meta["namespace"], meta["name"])
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
        old = body.get("status") or {}
        if _same(old, status):
            # Events report transitions, and every transition changes the status: an unchanged status
            # means this was already reported (by us before a restart, or a moment ago).
            return
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            await self.kube.patch_status(
                res.GROUP, res.VERSION, res.PLURAL, meta["namespace"], meta["name"], patch
            )
        except NotFound:
            return
        for event in events:
            self.emit(body, event)

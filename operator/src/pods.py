"""What pods say about themselves, read from their status: pure, from the API server's pod objects.

The kubelet writes what each container said into the pod's status: a terminated container's exit code
and termination message (the scoring and batch containers use `FallbackToLogsOnError`, so a failure's
last log lines), a waiting container's reason and message (ImagePullBackOff, CrashLoopBackOff,
CreateContainerConfigError). A failing readiness probe leaves nothing there but "running, not ready".

Termination messages are what the container printed: `forecast` prints no secret, but any image could,
so each is cut to its last `MESSAGE_CHARS` characters and a whole summary to `SUMMARY_CHARS`; nothing
else of the pod (its spec, its env) is read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

MESSAGE_CHARS: Final = 240
SUMMARY_CHARS: Final = 600
# Distinct explanations a summary names (pods that fail alike share one).
EXPLANATIONS: Final = 3
NAMES_PER_EXPLANATION: Final = 2


def _squeezed(text: str) -> str:
    return " ".join(text.split())


def _tail(text: str, chars: int = MESSAGE_CHARS) -> str:
    """The last `chars` characters on one line: a log's error is at its end."""
    text = _squeezed(text)
    return text if len(text) <= chars else "…" + text[-(chars - 1) :]


def _head(text: str, chars: int) -> str:
    text = _squeezed(text)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _with(head: str, message: Any) -> str:
    """`head: <message's tail>`, or `head` alone when there is no message."""
    return f"{head}: {_tail(str(message))}" if message else head


def _last_termination(container: dict[str, Any]) -> dict[str, Any] | None:
    """A container status' termination: the current one, else the one before its restart (a crash loop
    shows the container waiting, and why it ended in `lastState`)."""
    found = (container.get("state") or {}).get("terminated") or (container.get("lastState") or {}).get(
        "terminated"
    )
    return dict(found) if found else None


def termination_message(pods: Iterable[dict[str, Any]], container: str, phase: str) -> str | None:
    """Container `container`'s termination message in the newest pod of `phase` that has one (a Job may
    have retried)."""
    ended = [p for p in pods if (p.get("status") or {}).get("phase") == phase]
    for pod in sorted(ended, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""), reverse=True):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            found = _last_termination(status) or {}
            if status.get("name") == container and found.get("message"):
                return str(found["message"])
    return None


def _ended(kind: str, status: dict[str, Any], ended: dict[str, Any]) -> str:
    """'init container fetch-model exited 4 (CrashLoopBackOff, 3 restarts): <its message's tail>'."""
    said = f"{kind} {status.get('name')} exited {ended.get('exitCode')}"
    waiting = (status.get("state") or {}).get("waiting") or {}
    if waiting.get("reason"):
        said += f" ({waiting['reason']}, {int(status.get('restartCount') or 0)} restarts)"
    return _with(said, ended.get("message") or ended.get("reason"))


def _container(kind: str, status: dict[str, Any], *, init: bool) -> str | None:
    """What one container's status says is wrong, or None when it is done (init) or ready (others)."""
    state = status.get("state") or {}
    now_ended = state.get("terminated")
    if init and now_ended is not None and now_ended.get("exitCode") == 0:
        return None
    if state.get("running") is not None:
        if init:
            return f"{kind} {status.get('name')} running"
        return None if status.get("ready") else f"{kind} {status.get('name')} running, not ready"
    ended = _last_termination(status)
    if ended is not None:
        return _ended(kind, status, ended)
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason") or "Waiting"
    if not init and reason == "PodInitializing":
        return None  # waits for the init containers, which say what holds them
    return _with(f"{kind} {status.get('name')} {reason}", waiting.get("message"))


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_trouble(pod: dict[str, Any]) -> str | None:
    """Why this pod is not ready, from its status (None when it is): the first init container not done,
    else the first container not ready, else what the scheduler or the kubelet said of the pod."""
    status = pod.get("status") or {}
    if _ready(pod):
        return None
    if status.get("phase") in {"Failed", "Succeeded"} and status.get("reason"):
        return _with(f"{status['phase']}: {status['reason']}", status.get("message"))
    for kind, key in (("init container", "initContainerStatuses"), ("container", "containerStatuses")):
        for container in status.get(key) or []:
            said = _container(kind, container, init=key == "initContainerStatuses")
            if said is not None:
                return said
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return _with(f"not scheduled: {cond.get('reason')}", cond.get("message"))
    return f"{status.get('phase') or 'Pending'}, no container started"


def _replica_failure(deployment: dict[str, Any] | None) -> str | None:
    """The ReplicaSet's FailedCreate (quota, admission, a missing ServiceAccount), which the Deployment
    controller copies into the Deployment's `ReplicaFailure` condition."""
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return _with(str(cond.get("reason")), cond.get("message"))
    return None


def _named(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_PER_EXPLANATION])
    more = len(names) - NAMES_PER_EXPLANATION
    return ("pod " if len(names) == 1 else "pods ") + shown + (f" and {more} more" if more > 0 else "")


def why_unavailable(
    pods: list[dict[str, Any]], deployment: dict[str, Any] | None = None, limit: int = SUMMARY_CHARS
) -> str:
    """A short reason a Deployment's replicas are not available, from its pods (and, with none, from the
    Deployment's ReplicaFailure): at most `EXPLANATIONS` distinct ones, pods that fail alike named
    together, at most `limit` characters."""
    live = sorted(
        (p for p in pods if not p["metadata"].get("deletionTimestamp")), key=lambda p: p["metadata"]["name"]
    )
    if not live:
        failure = _replica_failure(deployment)
        return _head("no pods" + (f": {failure}" if failure else ""), limit)
    grouped: dict[str, list[str]] = {}
    for pod in live:
        trouble = pod_trouble(pod)
        if trouble is not None:
            grouped.setdefault(trouble, []).append(pod["metadata"]["name"])
    if not grouped:
        return _head(f"{_named([p['metadata']['name'] for p in live])}: ready, not yet available", limit)
    parts = [f"{_named(names)}: {trouble}" for trouble, names in list(grouped.items())[:EXPLANATIONS]]
    others = sum(len(names) for names in list(grouped.values())[EXPLANATIONS:])
    if others:
        parts.append(f"{others} more pods fail otherwise")
    return _head("; ".join(parts), limit)

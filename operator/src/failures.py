"""What a failed reconcile means: transient or permanent, when to try again, and whether to show it.

Pure: the reconciler turns each error (an API server answer, a model store error) into a `Failure`, and
these functions decide the rest, so the policy is one table with unit tests, not scattered `except`s.

- Transient (429, 5xx, timeouts and refused connections, 409 Conflict, an unreachable store): retried with
  a short exponential backoff (a 429's Retry-After when the server gives one), and shown on the status
  only once it has lasted `VISIBLE_AFTER` attempts, so a blip never reads as a failure.
- Permanent (400, 401, 403, 404, 422 and any other 4xx; a store that refuses the credentials): shown at
  once, with the server's message, and retried slowly, so a fixed spec, webhook or RBAC heals without a
  restart (a spec change also triggers a reconcile at once, through its watch event).
- Unexpected (any other exception: a bug, or no client at all): permanent, as it will most likely repeat;
  retried slowly, so no object is left unreconciled until its next watch event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TRANSIENT_FIRST_SECONDS: Final = 1.0
TRANSIENT_MAX_SECONDS: Final = 60.0
PERMANENT_FIRST_SECONDS: Final = 10.0
PERMANENT_MAX_SECONDS: Final = 600.0
VISIBLE_AFTER: Final = 5
# No status code: the request never got an answer (timeout, refused connection, TLS failure).
NO_ANSWER: Final = 0


@dataclass(frozen=True)
class Failure:
    """One failed attempt: the condition it belongs on, the reason and message to show there."""

    condition: str  # "Reconciled" (a write to the API server) or "ModelVerified" (the model store)
    reason: str
    message: str
    transient: bool
    retry_after: float | None = None  # the server's Retry-After, honoured for a transient failure


def transient_status(status: int) -> bool:
    """An API answer worth retrying as is: throttled, a server-side failure, a conflict, or no answer."""
    return status in {NO_ANSWER, 409, 429} or status >= 500


def api_failure(
    status: int, reason: str, message: str, request: str, retry_after: float | None = None
) -> Failure:
    """The API server's answer to `request` (e.g. "apply deployments/demand-blue")."""
    return Failure(
        condition="Reconciled",
        reason=reason or ("NoAnswer" if status == NO_ANSWER else f"HTTP{status}"),
        message=f"{request}: {status} {message}"[:1000],
        transient=transient_status(status),
        retry_after=retry_after,
    )


def unexpected_failure(exc: BaseException) -> Failure:
    """An exception no answer explains (a bug, a client that cannot be built)."""
    return Failure(
        condition="Reconciled",
        reason="UnexpectedError",
        message=f"{type(exc).__name__}: {exc}"[:1000],
        transient=False,
    )


def retry_delay(failure: Failure, attempt: int) -> float:
    """Seconds until attempt `attempt + 1` (`attempt` counts consecutive failures, from 1)."""
    exponent = max(attempt - 1, 0)
    if failure.transient:
        backoff = min(TRANSIENT_FIRST_SECONDS * 2.0**exponent, TRANSIENT_MAX_SECONDS)
        if failure.retry_after is not None:
            return min(max(failure.retry_after, backoff), PERMANENT_MAX_SECONDS)
        return backoff
    return min(PERMANENT_FIRST_SECONDS * 2.0**exponent, PERMANENT_MAX_SECONDS)


def visible(failure: Failure, attempt: int) -> bool:
    """Shown as a condition (and one Warning Event): permanent at once, transient once it lasts."""
    return not failure.transient or attempt >= VISIBLE_AFTER

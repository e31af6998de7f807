"""The last batch run as the ForecastModel's status shows it: pure, from the Jobs the CronJob made.

The newest Job decides `status.batch` and the `BatchSucceeded` condition; a failed run is a change of
the status (its Job's name), so it gets one Warning Event, and a run in progress changes nothing.
Rows are not shown: `forecast predict` reports them in its log, which a Job's status does not carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from retail_forecast.operator import resources as res
from retail_forecast.operator.rollout import Condition, Event

CONDITION: Final = "BatchSucceeded"


@dataclass(frozen=True)
class BatchReport:
    status: dict[str, Any] | None  # status.batch; None: no run has finished yet
    condition: Condition | None
    events: list[Event]


def _finished(job: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """("Succeeded" | "Failed", the deciding condition) once the Job controller has decided."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in {"Complete", "Failed"}:
            return ("Succeeded" if cond["type"] == "Complete" else "Failed"), cond
    return None


def _started(job: dict[str, Any]) -> str:
    return str((job.get("status") or {}).get("startTime") or job["metadata"].get("creationTimestamp") or "")


def last_run(jobs: list[dict[str, Any]], previous: dict[str, Any] | None) -> BatchReport:
    """The newest finished Job of `jobs` (those labelled `res.batch_labels`), against `previous`
    status.batch: an Event only for a run the status has not shown yet."""
    done = [(job, found) for job in jobs if (found := _finished(job)) is not None]
    if not done:
        return BatchReport(None, None, [])
    job, (outcome, cond) = max(done, key=lambda pair: (_started(pair[0]), pair[0]["metadata"]["name"]))
    meta = job["metadata"]
    status = {
        "job": meta["name"],
        "lastRun": _started(job),
        "finished": cond.get("lastTransitionTime") or (job.get("status") or {}).get("completionTime"),
        "version": (meta.get("labels") or {}).get(res.LABEL_VERSION),
        "outcome": outcome,
    }
    if outcome == "Succeeded":
        message = f"{meta['name']} wrote the forecasts of version {status['version']}"
        return BatchReport(status, Condition("True", "Completed", message), [])
    reason = str(cond.get("reason") or "JobFailed")
    message = f"{meta['name']} (version {status['version']}): {cond.get('message') or reason}"[:1000]
    new = (previous or {}).get("job") != meta["name"]
    return BatchReport(
        status, Condition("False", reason, message), [Event("Warning", "BatchFailed", message)] if new else []
    )

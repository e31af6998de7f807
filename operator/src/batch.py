"""The last batch run as the ForecastModel's status shows it: pure, from the CronJob's Jobs and their pods.

The newest finished Job decides `status.batch` and the `BatchSucceeded` condition; a failed run is a
change of the status (its Job's name), so it gets one Warning Event, and a run in progress changes
nothing. What the run wrote comes from its pod's termination message: a succeeded run's `forecast
predict` summary (rows, series, output; checked against the Job's version and sha256), a failed run's log
tail (its error). Pods are read once per finished run (`needs_pods`): after that the status carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from retail_forecast.batch.summary import parse_summary
from retail_forecast.operator import resources as res
from retail_forecast.operator.pods import termination_message
from retail_forecast.operator.rollout import Condition, Event

CONDITION: Final = "BatchSucceeded"
# status.batch's fields read from the run's pod, carried over while the same run stays the newest.
FROM_POD: Final = ("rows", "series", "output", "rowsUnknown", "podMessage")
POD_MESSAGE_CHARS: Final = 500


@dataclass(frozen=True)
class BatchReport:
    status: dict[str, Any] | None  # status.batch; None: no run has finished yet
    condition: Condition | None
    events: list[Event]


@dataclass(frozen=True)
class FinishedRun:
    job: dict[str, Any]
    outcome: str  # "Succeeded" | "Failed"
    decided_by: dict[str, Any]  # the Job's Complete or Failed condition

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])


def _finished(job: dict[str, Any]) -> FinishedRun | None:
    """Once the Job controller has decided: the outcome and its deciding condition."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in {"Complete", "Failed"}:
            return FinishedRun(job, "Succeeded" if cond["type"] == "Complete" else "Failed", cond)
    return None


def _started(job: dict[str, Any]) -> str:
    return str((job.get("status") or {}).get("startTime") or job["metadata"].get("creationTimestamp") or "")


def newest_finished(jobs: list[dict[str, Any]]) -> FinishedRun | None:
    """The newest of `jobs` (those labelled `res.batch_labels`) that has finished."""
    done = [run for job in jobs if (run := _finished(job)) is not None]
    return max(done, key=lambda run: (_started(run.job), run.name), default=None)


def needs_pods(run: FinishedRun | None, previous: dict[str, Any] | None) -> bool:
    """Whether the run's pods must be read: only for a run the status does not show yet."""
    return run is not None and (previous or {}).get("job") != run.name


def from_pods(run: FinishedRun, pods: list[dict[str, Any]]) -> dict[str, Any]:
    """status.batch's `FROM_POD` fields: what the run's pods say, and never a guess.

    A succeeded run shows rows, series and output when its summary is there and is this run's (version
    and sha256 of the Job); otherwise `rowsUnknown` says why. A failed run shows its pod's message.
    """
    fields: dict[str, Any] = dict.fromkeys(FROM_POD)
    if run.outcome == "Failed":
        message = termination_message(pods, res.BATCH_CONTAINER, "Failed")
        fields["podMessage"] = message[-POD_MESSAGE_CHARS:].strip() if message else None
        return fields
    message = termination_message(pods, res.BATCH_CONTAINER, "Succeeded")
    summary = parse_summary(message)
    meta = run.job["metadata"]
    version = (meta.get("labels") or {}).get(res.LABEL_VERSION)
    sha256 = (meta.get("annotations") or {}).get(res.ANNOTATION_SHA256)
    if not pods:
        fields["rowsUnknown"] = "the run's pod is gone: nothing reports its rows"
    elif summary is None:
        what = "no termination message" if message is None else "a termination message that is no summary"
        fields["rowsUnknown"] = f"the run's pod left {what}"
    elif (summary.version, summary.sha256) != (version, sha256):
        fields["rowsUnknown"] = (
            f"the run's summary is of version {summary.version} ({summary.sha256[:12]}), "
            f"not the Job's {version} ({(sha256 or '')[:12]})"
        )
    else:
        fields.update(rows=summary.rows, series=summary.forecast, output=summary.output)
    return fields


def last_run(
    run: FinishedRun | None, previous: dict[str, Any] | None, pods: list[dict[str, Any]] | None
) -> BatchReport:
    """The report of `run` against `previous` status.batch: an Event only for a run not shown yet.

    `pods` are the run's pods, or None when `needs_pods` said the status already shows this run.
    """
    if run is None:
        return BatchReport(None, None, [])
    new = needs_pods(run, previous)
    shown = {key: (previous or {}).get(key) for key in FROM_POD}
    pod_fields = from_pods(run, pods or []) if new else shown
    meta, cond = run.job["metadata"], run.decided_by
    status = {
        "job": run.name,
        "lastRun": _started(run.job),
        "finished": cond.get("lastTransitionTime") or (run.job.get("status") or {}).get("completionTime"),
        "version": (meta.get("labels") or {}).get(res.LABEL_VERSION),
        "outcome": run.outcome,
        **pod_fields,
    }
    if run.outcome == "Succeeded":
        rows = "an unknown number of" if status["rows"] is None else status["rows"]
        message = f"{run.name} wrote {rows} forecast rows of version {status['version']}"
        return BatchReport(status, Condition("True", "Completed", message), [])
    reason = str(cond.get("reason") or "JobFailed")
    detail = cond.get("message") or reason
    if status["podMessage"]:
        detail = f"{detail}; its pod said: {status['podMessage']}"
    message = f"{run.name} (version {status['version']}): {detail}"[:1000]
    return BatchReport(
        status, Condition("False", reason, message), [Event("Warning", "BatchFailed", message)] if new else []
    )

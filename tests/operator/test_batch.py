"""The batch CronJob's desired state and the last run's status, without a cluster (both pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from retail_forecast.batch.summary import RunSummary
from retail_forecast.operator import batch as batch_runs
from retail_forecast.operator import resources as res
from retail_forecast.operator.rollout import Condition

SHA = {"1": "1" * 64, "2": "2" * 64}
BATCH = {"schedule": "0 2 * * *", "input": "/data/sales.parquet", "output": "azureblob://runs/demand/"}


def _spec(batch: dict[str, Any] | None = BATCH, **serving: Any) -> res.ForecastModelSpec:
    return res.ForecastModelSpec.model_validate(
        {
            "model": {"name": "demand", "version": "2", "storeUri": "azureblob://models"},
            "serving": {
                "image": "registry.local/inference:1",
                "serviceAccountName": "scorer",
                "env": [{"name": "AZURE_STORAGE_ACCOUNT_URL", "value": "https://acct.blob.core.windows.net"}],
                "resources": {"limits": {"memory": "512Mi"}},
                **serving,
            },
            **({} if batch is None else {"batch": batch}),
        }
    )


def _cronjob(version: str = "1", spec: res.ForecastModelSpec | None = None) -> dict[str, Any]:
    return res.cronjob("demand", spec or _spec(), version=version, sha256=SHA[version])


def _pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    return dict(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def test_the_cronjob_runs_predict_on_the_version_it_is_given_verified_by_sha256() -> None:
    cronjob = _cronjob("1")  # the spec names version 2: the CronJob runs what the reconciler calls active
    assert cronjob["metadata"]["name"] == "demand-batch"
    pod = _pod(cronjob)
    fetch, predict = pod["initContainers"][0], pod["containers"][0]
    assert fetch["args"][:4] == ["fetch-model", "azureblob://models", "demand", "1"]
    assert fetch["args"][-2:] == ["--sha256", SHA["1"]]
    assert predict["args"] == [
        "predict",
        "--data",
        "/data/sales.parquet",
        "--model-dir",
        res.MODEL_DIR,
        "--out",
        "azureblob://runs/demand/1/$(BATCH_JOB_NAME).parquet",
        "--no-progress",
        "--summary-file",
        "/dev/termination-log",
    ]
    # The summary goes where the kubelet reads the termination message; a failure's log tail otherwise.
    assert predict["terminationMessagePath"] == "/dev/termination-log"
    assert predict["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert predict["env"][-1]["name"] == "BATCH_JOB_NAME"  # Kubernetes expands $(VAR) from the env
    assert cronjob["spec"]["jobTemplate"]["metadata"]["labels"][res.LABEL_VERSION] == "1"
    assert _cronjob("2") != _cronjob("1")


def test_the_batch_pod_has_the_scoring_pods_identity_security_and_store_settings() -> None:
    spec = _spec()
    scoring = res.deployment("demand", res.Color.BLUE, spec, version="1", sha256=SHA["1"], replicas=2)
    serving_pod = scoring["spec"]["template"]["spec"]
    pod = _pod(_cronjob("1", spec))
    for field in ("securityContext", "serviceAccountName", "automountServiceAccountToken", "volumes"):
        assert pod[field] == serving_pod[field], field
    assert pod["initContainers"] == serving_pod["initContainers"]
    predict, serve = pod["containers"][0], serving_pod["containers"][0]
    assert predict["securityContext"] == serve["securityContext"]
    assert predict["securityContext"]["readOnlyRootFilesystem"] is True
    assert predict["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert predict["env"][: len(serve["env"])] == serve["env"]
    assert predict["image"] == serve["image"]
    assert pod["restartPolicy"] == "Never"
    template_labels = _cronjob("1", spec)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert template_labels["azure.workload.identity/use"] == "true"


def test_runs_are_bounded_one_at_a_time_and_suspendable() -> None:
    cronjob = _cronjob("1", _spec({**BATCH, "suspend": True, "activeDeadlineSeconds": 600}))
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is True
    assert spec["successfulJobsHistoryLimit"] <= 5 and spec["failedJobsHistoryLimit"] <= 5
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 600
    assert job["backoffLimit"] == 1


def test_batch_is_optional_and_validated() -> None:
    assert _spec(None).batch is None
    with pytest.raises(AssertionError):
        res.cronjob("demand", _spec(None), version="1", sha256=SHA["1"])
    with pytest.raises(ValidationError):
        _spec({"schedule": "0 2 * * *", "input": "/data"})  # no output
    with pytest.raises(ValidationError):
        _spec({**BATCH, "activeDeadlineSeconds": 1})


def _job(name: str, started: str, outcome: str | None, version: str = "1") -> dict[str, Any]:
    conditions = []
    if outcome == "Complete":
        conditions = [{"type": "Complete", "status": "True", "lastTransitionTime": "t"}]
    elif outcome == "Failed":
        conditions = [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit reached"}
        ]
    return {
        "metadata": {
            "name": name,
            "labels": {res.LABEL_VERSION: version},
            "annotations": {res.ANNOTATION_SHA256: SHA[version]},
        },
        "status": {"startTime": started, "conditions": conditions},
    }


def _run_pod(phase: str, message: str | None, created: str = "2026-01-01T02:00:00Z") -> dict[str, Any]:
    terminated = {
        "exitCode": 0 if phase == "Succeeded" else 1,
        **({} if message is None else {"message": message}),
    }
    return {
        "metadata": {"name": f"pod-{created}", "creationTimestamp": created},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": res.BATCH_CONTAINER, "state": {"terminated": terminated}}],
        },
    }


def _summary(version: str = "1", rows: int = 280) -> str:
    return RunSummary(
        model="demand",
        version=version,
        sha256=SHA[version],
        output=f"azureblob://runs/demand/{version}/b.parquet",
        series=12,
        forecast=10,
        rows=rows,
    ).message()


def _report(
    jobs: list[dict[str, Any]], previous: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> batch_runs.BatchReport:
    """What the reconciler does: the newest finished run, its pods only when the status lacks it."""
    run = batch_runs.newest_finished(jobs)
    return batch_runs.last_run(run, previous, pods if batch_runs.needs_pods(run, previous) else None)


def test_the_newest_finished_run_decides_and_a_failure_is_reported_once() -> None:
    assert batch_runs.last_run(None, None, None) == batch_runs.BatchReport(None, None, [])
    running = _job("b-3", "2026-01-03T02:00:00Z", None)
    failed = _job("b-2", "2026-01-02T02:00:00Z", "Failed", version="2")
    ok = _job("b-1", "2026-01-01T02:00:00Z", "Complete")

    failed_pods = [
        _run_pod("Failed", "DataError: sales.parquet: no such file"),
        _run_pod("Failed", None, "2025"),
    ]
    report = _report([ok, running, failed], None, failed_pods)
    assert report.status == {
        "job": "b-2",
        "lastRun": "2026-01-02T02:00:00Z",
        "finished": None,
        "version": "2",
        "outcome": "Failed",
        "rows": None,
        "series": None,
        "output": None,
        "rowsUnknown": None,
        "podMessage": "DataError: sales.parquet: no such file",
    }
    assert report.condition is not None
    assert (report.condition.status, report.condition.reason) == ("False", "BackoffLimitExceeded")
    assert report.condition.message.endswith(
        "limit reached; its pod said: DataError: sales.parquet: no such file"
    )
    assert [(e.type, e.reason) for e in report.events] == [("Warning", "BatchFailed")]
    again = _report([ok, failed], report.status, [])  # pods not read again: the status carries them
    assert again.events == []  # already shown
    assert (again.status, again.condition) == (report.status, report.condition)

    succeeded = _report(
        [ok, failed, _job("b-4", "2026-01-04T02:00:00Z", "Complete")],
        None,
        [_run_pod("Succeeded", _summary())],
    )
    assert succeeded.status is not None and succeeded.status["outcome"] == "Succeeded"
    assert succeeded.condition is not None and succeeded.condition.status == "True"
    assert succeeded.events == []


def test_a_succeeded_run_shows_the_rows_its_pod_reported() -> None:
    ok = _job("b-1", "2026-01-01T02:00:00Z", "Complete")
    retried = [
        _run_pod("Failed", "killed", "2026-01-01T02:00:00Z"),
        _run_pod("Succeeded", _summary(), "2026-01-01T02:05:00Z"),
    ]
    report = _report([ok], None, retried)
    assert report.status is not None
    assert (report.status["rows"], report.status["series"], report.status["rowsUnknown"]) == (280, 10, None)
    assert report.status["output"] == "azureblob://runs/demand/1/b.parquet"
    assert report.condition == Condition("True", "Completed", "b-1 wrote 280 forecast rows of version 1")
    assert _report([ok], report.status, []).status == report.status  # carried, not read again


@pytest.mark.parametrize(
    ("pods", "why"),
    [
        ([], "the run's pod is gone"),
        ([_run_pod("Succeeded", None)], "left no termination message"),
        (
            [_run_pod("Succeeded", "wrote 280 forecasts of demand 1")],
            "a termination message that is no summary",
        ),
        ([_run_pod("Succeeded", _summary()[:-5])], "a termination message that is no summary"),
        ([_run_pod("Succeeded", _summary(version="2"))], "of version 2"),  # not this Job's model
    ],
)
def test_rows_are_unknown_rather_than_guessed(pods: list[dict[str, Any]], why: str) -> None:
    report = _report([_job("b-1", "2026-01-01T02:00:00Z", "Complete")], None, pods)
    assert report.status is not None
    assert report.status["rows"] is None and report.status["output"] is None
    assert why in report.status["rowsUnknown"]
    assert report.condition == Condition(
        "True", "Completed", "b-1 wrote an unknown number of forecast rows of version 1"
    )

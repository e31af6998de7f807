"""The batch CronJob on a real control plane: it follows the active version, its runs show on the status.

The kube-controller-manager runs the Job controller; the test plays the kubelet (a run's pod is marked
Failed or Succeeded) and starts each run as `kubectl create job --from=cronjob/demand-batch` does,
rather than waiting for the schedule. The API server refuses an invalid spec.batch (the CRD's schema).
"""

from __future__ import annotations

import time
from typing import Any, Final

import kubernetes.dynamic.exceptions
import pytest

from retail_forecast.operator import resources as res
from tests.controlplane import ControlPlane, make_deployment_available, wait_until
from tests.operator.conftest import FM_API, Cluster, Operator, Store, forecast_model
from tests.operator.runs import CRONJOB, finish_run, run_from_the_cronjob, summary_of

pytestmark = pytest.mark.timeout(300)

WRITES: Final = {"create", "patch", "update", "delete"}
QUIET_SECONDS: Final = 15.0
BATCH: Final = {
    "schedule": "0 2 1 1 *",  # once a year: the runs here are the test's own
    "input": "/data/sales.parquet",
    "output": "azureblob://runs/demand",
    "backoffLimit": 0,  # one failed pod fails the run
}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def pinned(cluster: Cluster) -> tuple[str, str] | None:
    """The version the CronJob's runs fetch and the sha256 they verify it against (fetch-model's args)."""
    found = cluster.read("batch/v1", "CronJob", CRONJOB)
    if found is None:
        return None
    args = found["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0]["args"]
    return str(args[3]), str(args[args.index("--sha256") + 1])


def fm_status(cluster: Cluster) -> dict[str, Any]:
    found = cluster.read(FM_API, res.KIND, "demand") or {}
    return dict(found.get("status") or {})


def batch_status(cluster: Cluster) -> dict[str, Any]:
    return dict(fm_status(cluster).get("batch") or {})


def batch_failed_events(cluster: Cluster) -> list[dict[str, Any]]:
    return [e for e in cluster.client.list("v1", "Event", cluster.namespace) if e["reason"] == "BatchFailed"]


def test_the_batch_cronjob_follows_the_active_version_and_reports_its_runs(
    control_plane: ControlPlane, namespace: str, operator: Operator, store: Store
) -> None:
    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        fms = client.resource(FM_API, res.KIND)
        body = forecast_model(store)
        for invalid in (
            {"schedule": "daily"},
            {"input": "sales.csv"},
            {"output": "s3://runs"},
            {"output": None},
        ):
            refused = {**body, "spec": {**body["spec"], "batch": {**BATCH, **invalid}}}
            with pytest.raises(kubernetes.dynamic.exceptions.UnprocessibleEntityError):
                fms.create(body=_without_nulls(refused), namespace=namespace)
        body["spec"]["batch"] = BATCH
        fms.create(body=body, namespace=namespace)
        wait_until(lambda: cluster.read("apps/v1", "Deployment", "demand-blue"), what="demand-blue")
        make_deployment_available(client, namespace, "demand-blue")
        wait_until(lambda: pinned(cluster) == ("1", store.sha["1"]), what="the CronJob on version 1")

        # A promotion: the CronJob follows once version 2 is active, not while it is a preview.
        cluster.patch_spec({"model": {"version": "2"}})
        # The CronJob on version 1 shows the promotion's children are written; its status records it even
        # when version 2 lands first (a 409 on that write), so version 2 is a preview on the other colour.
        wait_until(
            lambda: cluster.read("apps/v1", "Deployment", "demand-green"), timeout=60, what="demand-green"
        )
        # A preview leaves the CronJob on the active version 1.
        wait_until(lambda: fm_status(cluster).get("previewVersion") == "2", what="the preview of 2")
        assert pinned(cluster) == ("1", store.sha["1"])
        make_deployment_available(client, namespace, "demand-green")
        wait_until(lambda: pinned(cluster) == ("2", store.sha["2"]), what="the CronJob on version 2")
        assert cluster.condition("BatchSucceeded") is None  # no run yet: no verdict

        # A failed run: a Warning Event and BatchSucceeded=False with the Job's reason.
        # With its pod's last words (the log tail the kubelet keeps under FallbackToLogsOnError).
        run_from_the_cronjob(client, namespace, "demand-batch-manual-1")
        error = "forecast: /data/sales.parquet: no such file"
        finish_run(client, namespace, "demand-batch-manual-1", "Failed", error)
        wait_until(
            lambda: cluster.condition("BatchSucceeded") == ("False", "BackoffLimitExceeded"),
            what="BatchSucceeded=False",
        )
        assert batch_status(cluster) | {"lastRun": None, "finished": None} == {
            "job": "demand-batch-manual-1",
            "version": "2",
            "outcome": "Failed",
            "podMessage": error,
            "lastRun": None,
            "finished": None,
        }
        failed = wait_until(lambda: batch_failed_events(cluster), what="the BatchFailed Event")
        assert error in failed[0]["message"]

        # The next run succeeds: its pod's summary shows as the run's rows.
        run_from_the_cronjob(client, namespace, "demand-batch-manual-2")
        summary = summary_of(client, namespace, "demand-batch-manual-2", rows=84)
        finish_run(client, namespace, "demand-batch-manual-2", "Succeeded", summary)
        wait_until(
            lambda: cluster.condition("BatchSucceeded") == ("True", "Completed"), what="BatchSucceeded"
        )
        shown = batch_status(cluster)
        assert (shown["job"], shown["outcome"], shown["rows"], shown["series"]) == (
            "demand-batch-manual-2",
            "Succeeded",
            84,
            6,
        )
        assert shown["output"] == "azureblob://runs/demand/2/demand-batch-manual-2.parquet"
        assert "podMessage" not in shown and "rowsUnknown" not in shown

        # A run whose pod left no summary (an older image, say): rows unknown, never a guess.
        run_from_the_cronjob(client, namespace, "demand-batch-manual-3")
        finish_run(client, namespace, "demand-batch-manual-3", "Succeeded")
        wait_until(lambda: batch_status(cluster).get("job") == "demand-batch-manual-3", what="run 3 shown")
        shown = batch_status(cluster)
        assert "rows" not in shown and "output" not in shown
        assert "no termination message" in shown["rowsUnknown"]

        # Steady state: no write at all, and the failure was reported once.
        def writes() -> list[tuple[str, str, str]]:
            return [
                (e.verb, e.resource, e.name) for e in control_plane.audit(operator.user) if e.verb in WRITES
            ]

        before = writes()
        time.sleep(QUIET_SECONDS)
        assert writes()[len(before) :] == [], "the operator wrote in steady state"
        assert len(batch_failed_events(cluster)) == 1

        # spec.batch removed: the CronJob goes, and so does the last run's report.
        cluster.patch_spec({"batch": None})
        wait_until(lambda: cluster.read("batch/v1", "CronJob", CRONJOB) is None, what="the CronJob deleted")
        wait_until(lambda: not batch_status(cluster), what="status.batch cleared")
        assert cluster.condition("BatchSucceeded") is None

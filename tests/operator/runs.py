"""Batch runs on the test control plane: the test starts a run as `kubectl create job --from=cronjob/…`
does, the Job controller makes its pod, and the test plays the kubelet that ends it."""

from __future__ import annotations

import time
from typing import Final

from retail_forecast.batch.summary import RunSummary
from retail_forecast.operator import resources as res
from tests.controlplane import Client, wait_until

CRONJOB: Final = res.cronjob_name("demand")


def run_from_the_cronjob(client: Client, namespace: str, name: str) -> None:
    """What `kubectl create job NAME --from=cronjob/demand-batch` creates."""
    cronjob = client.read("batch/v1", "CronJob", CRONJOB, namespace)
    assert cronjob is not None
    template = cronjob["spec"]["jobTemplate"]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": template["metadata"].get("labels") or {},
            "annotations": {
                **(template["metadata"].get("annotations") or {}),
                "cronjob.kubernetes.io/instantiate": "manual",
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": CRONJOB,
                    "uid": cronjob["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    client.resource("batch/v1", "Job").create(body=job, namespace=namespace)


def summary_of(client: Client, namespace: str, job: str, rows: int) -> str:
    """The summary `forecast predict --summary-file` would leave, for the model and sha256 the run pins."""
    found = client.read("batch/v1", "Job", job, namespace)
    assert found is not None
    version = found["metadata"]["labels"][res.LABEL_VERSION]
    return RunSummary(
        model="demand",
        version=version,
        sha256=found["metadata"]["annotations"][res.ANNOTATION_SHA256],
        output=f"azureblob://runs/demand/{version}/{job}.parquet",
        series=rows // 14 + 1,
        forecast=rows // 14,
        rows=rows,
    ).message()


def finish_run(client: Client, namespace: str, job: str, phase: str, message: str | None = None) -> None:
    """Play the kubelet: the run's pod ends in `phase` (Failed or Succeeded), leaving `message` as its
    predict container's termination message."""
    pods = wait_until(lambda: client.list("v1", "Pod", namespace, f"job-name={job}"), what=f"{job}'s pod")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    code = 1 if phase == "Failed" else 0
    terminated = {"exitCode": code, "reason": "Error" if code else "Completed"}
    status = {
        "phase": phase,
        "startTime": now,
        "containerStatuses": [
            {
                "name": res.BATCH_CONTAINER,
                "image": "registry.local/inference:1",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": terminated if message is None else {**terminated, "message": message}
                },
            }
        ],
    }
    client.resource("v1", "Pod").status.patch(
        body={"status": status},
        name=pods[0]["metadata"]["name"],
        namespace=namespace,
        content_type="application/merge-patch+json",
    )

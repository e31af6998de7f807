"""The ForecastModel resource as the operator reads it, and the Kubernetes objects it owns.

Pure data: parsing a ForecastModel's spec and rendering the Deployment, Services, HPA and batch CronJob
for it. No I/O,
so every object the operator would create can be inspected in a unit test.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from retail_forecast.batch.summary import TERMINATION_LOG

GROUP: Final = "retailforecast.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "forecastmodels"
KIND: Final = "ForecastModel"

PORT: Final = 8080
# Container Insights (monitor_kubernetes_pods, see k8s/monitoring/) scrapes pods annotated so.
SCRAPE_ANNOTATIONS: Final = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PORT),
    "prometheus.io/path": "/metrics",
}
MODEL_MOUNT: Final = "/models"
MODEL_DIR: Final = "/models/current"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_COLOR: Final = f"{GROUP}/color"
LABEL_VERSION: Final = f"{GROUP}/model-version"
ANNOTATION_SHA256: Final = f"{GROUP}/model-sha256"
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"
MANAGER: Final = "retail-forecast-operator"
# Holds `spec.replicas` between our last apply that set it and the HPA's first scale (see reconcile.py).
HANDOVER_MANAGER: Final = f"{MANAGER}-handover"


class Color(StrEnum):
    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Color:
        return Color.GREEN if self is Color.BLUE else Color.BLUE


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ModelRef(_Spec):
    name: str
    version: str
    store_uri: str = Field(alias="storeUri")
    sha256: str | None = None


class Serving(_Spec):
    image: str
    replicas: int = Field(2, ge=0)
    resources: dict[str, Any] = Field(default_factory=dict)
    service_account_name: str | None = Field(None, alias="serviceAccountName")
    env: list[dict[str, Any]] = Field(default_factory=list)


class Autoscaling(_Spec):
    enabled: bool = True
    min_replicas: int = Field(2, ge=1, alias="minReplicas")
    max_replicas: int = Field(10, ge=1, alias="maxReplicas")
    target_cpu: int = Field(70, ge=1, le=100, alias="targetCPUUtilizationPercentage")

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed maxReplicas")
        return self


class Rollout(_Spec):
    progress_deadline_seconds: int = Field(300, ge=10, alias="progressDeadlineSeconds")
    scale_down_delay_seconds: int = Field(60, ge=0, alias="scaleDownDelaySeconds")
    auto_promote: bool = Field(True, alias="autoPromote")


class Batch(_Spec):
    """`forecast predict` on a schedule with the active version (the CRD validates the formats)."""

    schedule: str
    input: str
    output: str
    resources: dict[str, Any] = Field(default_factory=dict)
    suspend: bool = False
    active_deadline_seconds: int = Field(3600, ge=60, alias="activeDeadlineSeconds")
    backoff_limit: int = Field(1, ge=0, le=10, alias="backoffLimit")


class ForecastModelSpec(_Spec):
    model: ModelRef
    serving: Serving
    autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling.model_validate({}))
    rollout: Rollout = Field(default_factory=lambda: Rollout.model_validate({}))
    batch: Batch | None = None

    @property
    def replicas(self) -> int:
        """Replicas a colour starts with: the HPA's floor when autoscaling, else the fixed count."""
        return self.autoscaling.min_replicas if self.autoscaling.enabled else self.serving.replicas


def model_pod_labels(owner: str) -> dict[str, str]:
    """Labels every pod of `owner` has: its scoring pods of either colour, and its batch runs' pods."""
    return {LABEL_NAME: "forecast-model", LABEL_INSTANCE: owner}


def selector(owner: str, color: Color) -> dict[str, str]:
    return {**model_pod_labels(owner), LABEL_COLOR: color.value}


def labels(owner: str, color: Color | None = None) -> dict[str, str]:
    found = {LABEL_NAME: "forecast-model", LABEL_INSTANCE: owner, LABEL_MANAGED_BY: MANAGER}
    if color is not None:
        found[LABEL_COLOR] = color.value
    return found


def deployment_name(owner: str, color: Color) -> str:
    return f"{owner}-{color.value}"


def preview_service_name(owner: str) -> str:
    return f"{owner}-preview"


def cronjob_name(owner: str) -> str:
    return f"{owner}-batch"


_RESTRICTED: Final = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def _fetch_container(spec: ForecastModelSpec, version: str, sha256: str) -> dict[str, Any]:
    """The init container that fetches `version` into MODEL_DIR and verifies it against `sha256`."""
    return {
        "name": "fetch-model",
        "image": spec.serving.image,
        "args": [
            "fetch-model",
            spec.model.store_uri,
            spec.model.name,
            version,
            MODEL_DIR,
            "--sha256",
            sha256,
        ],
        "env": [dict(e) for e in spec.serving.env],
        "securityContext": _RESTRICTED,
        "volumeMounts": [{"name": "model", "mountPath": MODEL_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        # A refused model (sha256, unreachable store, a feature schema this image does not compute) ends
        # the container with its error as the last log line: the pod's status shows it as the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": spec.serving.resources,
    }


def _model_pod_spec(
    spec: ForecastModelSpec, version: str, sha256: str, container: dict[str, Any]
) -> dict[str, Any]:
    """A pod that runs `container` on the verified model: the scoring pods' and the batch runs' one
    identity, security context, store settings and volumes."""
    main = {
        **container,
        "image": spec.serving.image,
        "env": [dict(e) for e in spec.serving.env] + list(container.get("env", [])),
        "securityContext": _RESTRICTED,
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [_fetch_container(spec, version, sha256)],
        "containers": [main],
        "volumes": [{"name": "model", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 30,
        "automountServiceAccountToken": spec.serving.service_account_name is not None,
        # Always named, in both fields: the API server copies serviceAccountName into the deprecated
        # serviceAccount and back, so an apply that only dropped it would see it come back.
        "serviceAccountName": spec.serving.service_account_name or "default",
        "serviceAccount": spec.serving.service_account_name or "default",
    }


def _identity_labels(spec: ForecastModelSpec) -> dict[str, str]:
    return {"azure.workload.identity/use": "true"} if spec.serving.service_account_name is not None else {}


def deployment(
    owner: str, color: Color, spec: ForecastModelSpec, *, version: str, sha256: str, replicas: int | None
) -> dict[str, Any]:
    """The colour's Deployment serving `version`: an init container fetches and verifies the model.

    `replicas` None leaves the count out of the intent: the HPA owns it.
    """
    pod_labels = {**labels(owner, color), LABEL_VERSION: version, **_identity_labels(spec)}
    serve = {
        "name": "serve",
        "args": ["serve", "--model-dir", MODEL_DIR, "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": spec.serving.resources,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(owner, color),
            "labels": {**labels(owner, color), LABEL_VERSION: version},
            "annotations": {ANNOTATION_SHA256: sha256},
        },
        "spec": {
            **({} if replicas is None else {"replicas": replicas}),
            "selector": {"matchLabels": selector(owner, color)},
            "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(SCRAPE_ANNOTATIONS)},
                "spec": _model_pod_spec(spec, version, sha256, serve),
            },
        },
    }


BATCH_COMPONENT: Final = "batch"
BATCH_CONTAINER: Final = "predict"
# The label the Job controller gives a Job's pods.
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
# Kubernetes expands $(VAR) in args from the container's env: each run writes its own dataset, named
# after its Job (the CronJob names each scheduled Job uniquely), under the version that made it.
_JOB_NAME_ENV: Final = "BATCH_JOB_NAME"


def batch_labels(owner: str) -> dict[str, str]:
    """The CronJob's, its Jobs' and their pods' labels: the operator finds the runs by them."""
    return {**labels(owner), LABEL_COMPONENT: BATCH_COMPONENT}


def batch_output(output: str, version: str) -> str:
    return f"{output.rstrip('/')}/{version}/$({_JOB_NAME_ENV}).parquet"


def cronjob(owner: str, spec: ForecastModelSpec, *, version: str, sha256: str) -> dict[str, Any]:
    """`forecast predict` on `spec.batch.schedule` with the active `version`, fetched and verified by
    sha256 as the scoring pods do: the intent changes only when the active version (or the spec) does."""
    batch = spec.batch
    assert batch is not None, "only a ForecastModel with spec.batch has a CronJob"
    run_labels = {**batch_labels(owner), LABEL_VERSION: version}
    predict = {
        "name": BATCH_CONTAINER,
        "args": [
            "predict",
            "--data",
            batch.input,
            "--model-dir",
            MODEL_DIR,
            "--out",
            batch_output(batch.output, version),
            "--no-progress",
            "--summary-file",
            TERMINATION_LOG,
        ],
        "env": [
            {
                "name": _JOB_NAME_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}},
            }
        ],
        # A run that succeeded leaves its summary (rows, version, output) as the pod's termination
        # message, which the operator shows in status.batch; one that failed wrote none, and the kubelet
        # keeps the log's last lines (predict's error) instead.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": batch.resources,
    }
    pod_spec = {**_model_pod_spec(spec, version, sha256, predict), "restartPolicy": "Never"}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(owner),
            "labels": run_labels,
            "annotations": {ANNOTATION_SHA256: sha256},
        },
        "spec": {
            "schedule": batch.schedule,
            "suspend": batch.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": run_labels, "annotations": {ANNOTATION_SHA256: sha256}},
                "spec": {
                    "activeDeadlineSeconds": batch.active_deadline_seconds,
                    "backoffLimit": batch.backoff_limit,
                    "template": {
                        "metadata": {"labels": {**run_labels, **_identity_labels(spec)}},
                        "spec": pod_spec,
                    },
                },
            },
        },
    }


def service(owner: str, name: str, color: Color) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels(owner)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(owner, color),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def hpa(owner: str, color: Color, spec: ForecastModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": owner, "labels": labels(owner)},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(owner, color),
            },
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": spec.autoscaling.target_cpu},
                    },
                }
            ],
        },
    }


# -- what the operator applies, and when it must apply again ---------------------------------------------


def intent_digest(obj: dict[str, Any]) -> str:
    """Digest of an applied intent (without the digest annotation itself)."""
    meta = dict(obj["metadata"])
    meta["annotations"] = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k != ANNOTATION_SPEC_HASH
    }
    return hashlib.sha256(json.dumps({**obj, "metadata": meta}, sort_keys=True).encode()).hexdigest()[:16]


def owned(obj: dict[str, Any], owner_reference: dict[str, Any]) -> dict[str, Any]:
    """The intent as applied: its owner (garbage collection) and the digest of all of it."""
    meta = {**obj["metadata"], "ownerReferences": [owner_reference]}
    stamped = {**obj, "metadata": meta}
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_SPEC_HASH: intent_digest(stamped)}
    return stamped


def _empty(value: Any) -> bool:
    return value is None or value in ([], {})


def contains(current: Any, wanted: Any) -> bool:
    """Every field of `wanted` has its value in `current` (server defaults may add more); omitempty
    fields the server drops count as present."""
    if isinstance(wanted, dict):
        if not isinstance(current, dict):
            return _empty(wanted) and _empty(current)
        return all(
            contains(current.get(key), value) if key in current else _empty(value)
            for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        if not isinstance(current, list):
            return _empty(wanted) and _empty(current)
        return len(current) == len(wanted) and all(
            contains(c, w) for c, w in zip(current, wanted, strict=True)
        )
    return bool(current == wanted)


def needs_apply(intent: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Apply only when the live object lacks part of the intent: a manual edit, or a new intent (its
    digest annotation then differs, even when the change only removes fields, which apply then drops).

    Server-side apply is idempotent, but a no-op apply is still a write request: a converged child gets
    none.
    """
    return current is None or not contains(current, intent)


def manages_replicas(current: dict[str, Any] | None, manager: str) -> bool:
    """Our field manager's last apply set `spec.replicas` (managedFields): dropping it from the intent
    would reset the count to the default of 1, so the HPA must be handed the field first."""
    if current is None:
        return False
    return any(
        entry.get("manager") == manager
        and entry.get("operation") == "Apply"
        and "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        for entry in current["metadata"].get("managedFields") or []
    )

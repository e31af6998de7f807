"""`forecast demo-cluster`: the operator on the cluster the kubeconfig names, and a blue/green rollout.

Where `forecast demo` shows a model's path on one machine, this shows the Kubernetes side: a model store
the pods can reach (Azurite in the demo namespace, or a store the user names), two small model versions
published into it by Jobs running the inference image, the operator installed from the chart
(charts/forecast-operator, rendered with Helm's own library and server-side applied, so no `helm`
binary is needed), then a ForecastModel on version 1 and an upgrade to version 2, printed as
`kubectl get fm -w` would while the operator's status changes arrive. Everything it creates lives in
one namespace (plus the chart's cluster-wide RBAC), which `--delete` removes.

Every wait is bounded: on timeout it names the condition it waited for and prints the last events.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
import yaml

from retail_forecast.core.manifest import MANIFEST_FILE, MODEL_FILE, Manifest
from retail_forecast.core.store import CONNECTION_STRING_ENV
from retail_forecast.demo import DemoError
from retail_forecast.operator import resources as res

STEPS: Final = 5
CHART: Final = Path(__file__).resolve().parents[1] / "charts" / "forecast-operator"
NAMESPACE: Final = "forecast-demo"
RELEASE: Final = "forecast-demo"
OPERATOR: Final = "forecast-demo-operator"  # the chart's fullname for this release
PEERING: Final = "forecast-demo"
FIELD_MANAGER: Final = "forecast-demo-cluster"
MODEL: Final = "demand"  # the model's name in the store and the ForecastModel's name
STORE_SECRET: Final = "model-store"
AZURITE: Final = "azurite"
# The version `make test` runs against (node_modules/azurite), from Microsoft's registry.
AZURITE_IMAGE: Final = "mcr.microsoft.com/azure-storage/azurite:3.35.0"
AZURITE_PORT: Final = 10000
# Azurite's published development account (the same for every Azurite; not a secret).
AZURITE_ACCOUNT: Final = "devstoreaccount1"
AZURITE_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEMO_LABELS: Final = {"app.kubernetes.io/part-of": "retail-forecast", "app.kubernetes.io/instance": RELEASE}
VERSIONS: Final = ("1", "2")
SCALE_DOWN_DELAY_S: Final = 30
CONFIGMAP_LIMIT: Final = 900 * 1024  # a ConfigMap holds at most 1 MiB
PROGRESS_EVERY_S: Final = 15.0
CHECK_TIMEOUT_S: Final = 5
EVENTS_SHOWN: Final = 10
# Namespaced before cluster-wide identity, the Deployment last (as Helm orders an install).
INSTALL_ORDER: Final = (
    "Namespace",
    "NetworkPolicy",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ClusterKopfPeering",
    "KopfPeering",
    "Service",
    "PodDisruptionBudget",
    "Deployment",
    "Job",
)
Obj = dict[str, Any]


class NoCluster(RuntimeError):  # noqa: N818 - a plain statement of the problem
    """No Kubernetes API answers at the kubeconfig's cluster."""


def _step(number: int, title: str) -> None:
    print(f"[{number}/{STEPS}] {title}", flush=True)


# -- what the demo creates (pure) ------------------------------------------------------------------------


def store_uri(namespace: str) -> str:
    """One prefix per demo namespace, so a shared store (--store-connection-string) never mixes runs."""
    return f"azureblob://models/{namespace}"


def azurite_connection_string(namespace: str) -> str:
    endpoint = f"http://{AZURITE}.{namespace}.svc:{AZURITE_PORT}/{AZURITE_ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint};"
    )


def store_env() -> list[Obj]:
    """The store's credentials for every pod that reads or writes it: from the demo's Secret."""
    ref = {"secretKeyRef": {"name": STORE_SECRET, "key": CONNECTION_STRING_ENV}}
    return [{"name": CONNECTION_STRING_ENV, "valueFrom": ref}]


_RESTRICTED: Final = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def namespace_object(namespace: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": DEMO_LABELS}}


def store_secret(namespace: str, connection_string: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": STORE_SECRET, "namespace": namespace, "labels": DEMO_LABELS},
        "type": "Opaque",
        "data": {CONNECTION_STRING_ENV: base64.b64encode(connection_string.encode()).decode()},
    }


def azurite_objects(namespace: str) -> list[Obj]:
    """Azurite's blob service, non-root on a read-only root filesystem; its data in an emptyDir."""
    labels = {**DEMO_LABELS, "app.kubernetes.io/name": AZURITE}
    selector = {"app.kubernetes.io/name": AZURITE}
    container = {
        "name": AZURITE,
        "image": AZURITE_IMAGE,
        "args": [
            "azurite-blob",
            "--blobHost",
            "0.0.0.0",
            "--blobPort",
            str(AZURITE_PORT),
            "--location",
            "/data",
            "--skipApiVersionCheck",
        ],
        "ports": [{"name": "blob", "containerPort": AZURITE_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "blob"}, "periodSeconds": 2},
        "securityContext": _RESTRICTED,
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": AZURITE, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "volumes": [
                            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": AZURITE, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": selector,
                "ports": [{"name": "blob", "port": AZURITE_PORT, "targetPort": "blob", "protocol": "TCP"}],
            },
        },
    ]


def model_configmap(namespace: str, version: str, model_dir: Path) -> Obj:
    """A model folder (model.onnx, manifest.json) as a ConfigMap a publish Job mounts."""
    data = {name: (model_dir / name).read_bytes() for name in (MODEL_FILE, MANIFEST_FILE)}
    size = sum(len(b) for b in data.values())
    if size > CONFIGMAP_LIMIT:
        raise DemoError(f"model {version} is {size} bytes, more than a ConfigMap holds ({CONFIGMAP_LIMIT})")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"model-{version}", "namespace": namespace, "labels": DEMO_LABELS},
        "binaryData": {name: base64.b64encode(b).decode() for name, b in data.items()},
    }


def publish_job(namespace: str, version: str, image: str, timeout: int) -> Obj:
    """`forecast publish` in the inference image, next to the store: the pods' own path to it."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"publish-{version}", "namespace": namespace, "labels": DEMO_LABELS},
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": timeout,
            "template": {
                "metadata": {"labels": DEMO_LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "publish",
                            "image": image,
                            "args": [
                                "publish",
                                "/model",
                                "--store",
                                store_uri(namespace),
                                "--name",
                                MODEL,
                                "--version",
                                version,
                            ],
                            "env": store_env(),
                            "securityContext": _RESTRICTED,
                            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                            "volumeMounts": [
                                {"name": "model", "mountPath": "/model", "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "model", "configMap": {"name": f"model-{version}"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def forecast_model(namespace: str, version: str, sha256: str, image: str, progress_deadline: int) -> Obj:
    """One replica, no HPA (a local cluster has no metrics-server), promoted as soon as it is available."""
    return {
        "apiVersion": f"{res.GROUP}/{res.VERSION}",
        "kind": res.KIND,
        "metadata": {"name": MODEL, "namespace": namespace, "labels": DEMO_LABELS},
        "spec": {
            "model": {"name": MODEL, "version": version, "storeUri": store_uri(namespace), "sha256": sha256},
            "serving": {
                "image": image,
                "replicas": 1,
                "env": store_env(),
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            },
            "autoscaling": {"enabled": False},
            "rollout": {
                "progressDeadlineSeconds": progress_deadline,
                "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S,
                "autoPromote": True,
            },
        },
    }


def split_image(image: str) -> tuple[str, str | None]:
    """`repo[:tag]` as the chart's image.repository and image.tag (a registry port is not a tag)."""
    name, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:
        return image, None
    return name, tag


def chart_values(namespace: str, operator_image: str | None) -> Obj:
    values: Obj = {
        "fullnameOverride": OPERATOR,
        "replicaCount": 1,
        "peering": {"name": PEERING},
        "watchNamespaces": [namespace],
        "env": store_env(),
    }
    if operator_image is not None:
        repository, tag = split_image(operator_image)
        values["image"] = {"repository": repository, **({"tag": tag} if tag else {})}
    return values


def chart_default_image(chart: Path, component: str) -> str:
    """`retail-forecast/<component>:<appVersion>`: the chart's default operator image, and its sibling."""
    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    repository = str(values["image"]["repository"]).rsplit("/", 1)[0]
    return f"{repository}/{component}:{values['image']['tag'] or app_version}"


def render_chart_files(chart: Path, values: Obj, *, release: str, namespace: str) -> dict[str, str]:
    """The chart's rendered templates by path (NOTES.txt too), by Helm's Go library (helm-python-sdk)."""
    import helm_python  # noqa: PLC0415 - only the cluster demo and the chart tests render

    files: dict[str, str] = helm_python.Chart.load(str(chart)).render(
        values, name=release, namespace=namespace, is_install=True
    )
    return files


def chart_objects(files: Mapping[str, str]) -> list[Obj]:
    """The objects of rendered templates, in path order; CRDs are `chart_crds`."""
    return [
        o for path in sorted(files) if path.endswith(".yaml") for o in yaml.safe_load_all(files[path]) if o
    ]


def render_chart(chart: Path, values: Obj, *, release: str, namespace: str) -> list[Obj]:
    return chart_objects(render_chart_files(chart, values, release=release, namespace=namespace))


def chart_crds(chart: Path) -> list[Obj]:
    return [
        o
        for path in sorted((chart / "crds").glob("*.yaml"))
        for o in yaml.safe_load_all(path.read_text())
        if o
    ]


def install_order(objects: Iterable[Obj]) -> list[Obj]:
    def rank(obj: Obj) -> int:
        kind = obj["kind"]
        return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)

    return sorted(objects, key=rank)


# -- the `kubectl get fm -w` table (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class FmRow:
    name: str
    version: str
    active: str
    colour: str
    preview: str
    ready: str
    reason: str
    created: datetime | None

    def cells(self, now: datetime) -> tuple[str, ...]:
        age = "-" if self.created is None else human_age((now - self.created).total_seconds())
        fields = (self.version, self.active, self.colour, self.preview, self.ready, self.reason)
        return (self.name, *fields, age)


COLUMNS: Final = ("NAME", "VERSION", "ACTIVE", "COLOUR", "PREVIEW", "READY", "REASON", "AGE")
WIDTHS: Final = (8, 9, 9, 7, 10, 6, 26, 5)


def human_age(seconds: float) -> str:
    """kubectl's short ages: 45s, 3m12s, 27m, 5h."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s"
    if s < 3 * 3600:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def conditions(obj: Mapping[str, Any]) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def telling_reason(obj: Mapping[str, Any]) -> str:
    """The condition that explains the moment best: a failure, then a rollout in progress, then Ready."""
    found = conditions(obj)
    for kind, status in (("Degraded", "True"), ("ModelVerified", "False"), ("Progressing", "True")):
        cond = found.get(kind)
        if cond is not None and cond.get("status") == status:
            return str(cond.get("reason") or kind)
    ready = found.get("Ready")
    return str(ready.get("reason") or "-") if ready else "-"


def fm_row(obj: Mapping[str, Any]) -> FmRow:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    created = meta.get("creationTimestamp")
    if isinstance(created, str):
        created = datetime.fromisoformat(created.replace("Z", "+00:00"))
    preview = status.get("previewColor")
    return FmRow(
        name=str(meta["name"]),
        version=str((spec.get("model") or {}).get("version", "-")),
        active=str(status.get("activeVersion") or "-"),
        colour=str(status.get("activeColor") or "-"),
        preview=f"{preview}/{status.get('previewVersion')}" if preview else "-",
        ready=str((conditions(obj).get("Ready") or {}).get("status", "-")),
        reason=telling_reason(obj),
        created=created if isinstance(created, datetime) else None,
    )


def table_line(cells: Iterable[str]) -> str:
    return "  " + " ".join(f"{cell:<{width}}" for cell, width in zip(cells, WIDTHS, strict=True)).rstrip()


@dataclass(frozen=True)
class Outcome:
    """The end of a watched phase: done (None while it continues), and whether it failed."""

    done: bool
    failed: str | None = None


def first_rollout(version: str) -> Callable[[Mapping[str, Any]], Outcome]:
    """Version 1 serves: verified, deployed and Ready; a model that fails verification ends it."""

    def judge(obj: Mapping[str, Any]) -> Outcome:
        status, found = obj.get("status") or {}, conditions(obj)
        verified = found.get("ModelVerified") or {}
        if verified.get("status") == "False":
            return Outcome(True, f"{verified.get('reason')}: {verified.get('message')}")
        ready = (found.get("Ready") or {}).get("status") == "True"
        return Outcome(status.get("activeVersion") == version and ready)

    return judge


def upgrade(version: str) -> Callable[[Mapping[str, Any]], Outcome]:
    """Version 2 is promoted (it serves and is Ready), or rolled back (the operator's Degraded reason)."""

    def judge(obj: Mapping[str, Any]) -> Outcome:
        status, found = obj.get("status") or {}, conditions(obj)
        if (status.get("rollout") or {}).get("failedVersion") == version:
            degraded = found.get("Degraded") or {}
            return Outcome(
                True, f"rolled back: {degraded.get('reason', 'RolledBack')}: {degraded.get('message', '')}"
            )
        return first_rollout(version)(obj)

    return judge


# -- the cluster (I/O) -----------------------------------------------------------------------------------


class Cluster:
    """The kubeconfig's cluster through the `kubernetes` package's dynamic client (any kind, as dicts)."""

    def __init__(self, context: str | None) -> None:
        import kubernetes.client  # noqa: PLC0415 - the operator extra
        import kubernetes.dynamic  # noqa: PLC0415

        from retail_forecast.operator.kube import NoKubernetesApi, load_configuration  # noqa: PLC0415

        try:
            configuration = load_configuration(context)
        except NoKubernetesApi as exc:
            raise NoCluster(
                f"{exc}; start a cluster (e.g. `kind create cluster`) or pass --context"
            ) from None
        configuration.retries = 0  # a refused port fails at once
        self.host = configuration.host
        self.api = kubernetes.client.ApiClient(configuration)
        self._dynamic: Any = None
        self._kubernetes = kubernetes

    def check(self) -> str:
        """The server's version, or NoCluster saying what to do."""
        try:
            info = self._kubernetes.client.VersionApi(self.api).get_code(_request_timeout=CHECK_TIMEOUT_S)
        except Exception as exc:  # refused, unresolvable, TLS, 401: all mean "no cluster here"
            reason = str(exc).splitlines()[0][:200]
            raise NoCluster(
                f"no Kubernetes API answers at {self.host} ({type(exc).__name__}: {reason}); start a cluster "
                "(e.g. `kind create cluster`) or point KUBECONFIG / --context at one"
            ) from None
        return str(info.git_version)

    def resource(self, api_version: str, kind: str) -> Any:
        if self._dynamic is None:  # discovery after the CRDs exist: the demo applies them first
            self._dynamic = self._kubernetes.dynamic.DynamicClient(self.api)
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def forget_discovery(self) -> None:
        self._dynamic = None

    def read(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            found = self.resource(api_version, kind).get(name=name, namespace=namespace)
        except self._kubernetes.dynamic.exceptions.NotFoundError:
            return None
        return dict(found.to_dict())

    def items(self, api_version: str, kind: str, namespace: str) -> list[Obj]:
        found = self.resource(api_version, kind).get(namespace=namespace)
        return [dict(item) for item in found.to_dict()["items"]]

    def apply(self, objects: Iterable[Obj]) -> None:
        """Server-side apply, as `kubectl apply --server-side --force-conflicts`."""
        for obj in objects:
            self.resource(obj["apiVersion"], obj["kind"]).server_side_apply(
                body=obj,
                name=obj["metadata"]["name"],
                namespace=obj["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        try:
            self.resource(api_version, kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Background"}
            )
        except self._kubernetes.dynamic.exceptions.NotFoundError:
            return False
        return True

    def watch(self, api_version: str, kind: str, namespace: str, name: str, seconds: int) -> Iterator[Obj]:
        """The object as it is now, then as it changes, for at most `seconds` (the server ends the watch)."""
        stream = self.resource(api_version, kind).watch(
            namespace=namespace, field_selector=f"metadata.name={name}", timeout=seconds
        )
        for event in stream:
            if event["type"] in {"ADDED", "MODIFIED"}:
                yield dict(event["raw_object"])

    def events(self, namespace: str) -> list[str]:
        """The namespace's last events, oldest first, as `kubectl get events` prints them."""

        def when(event: Obj) -> str:
            return str(event.get("lastTimestamp") or event.get("eventTime") or "")

        found = sorted(self.items("v1", "Event", namespace), key=when)[-EVENTS_SHOWN:]
        lines = []
        for e in found:
            about = e.get("involvedObject") or {}
            subject = f"{about.get('kind', '')}/{about.get('name', '')}"
            lines.append(
                f"  {e.get('type', '')} {e.get('reason', '')} {subject}: {e.get('message', '')}".rstrip()
            )
        return lines or ["  (no events)"]

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]


# -- waiting, with progress ------------------------------------------------------------------------------


def wait_for(
    cluster: Cluster, namespace: str, what: str, state: Callable[[], tuple[bool, str]], timeout: float
) -> None:
    """Poll `state` (done, how it stands) until done; print how it stands when it changes and every
    PROGRESS_EVERY_S; on timeout raise DemoError with the last state and the namespace's events."""
    started = last_print = time.monotonic()
    shown = ""
    while True:
        done, now_state = state()
        elapsed = time.monotonic() - started
        if done:
            print(f"  {what}: {now_state} ({elapsed:.0f} s)", flush=True)
            return
        if now_state != shown or time.monotonic() - last_print >= PROGRESS_EVERY_S:
            print(f"  waiting for {what}: {now_state} ({elapsed:.0f} s)", flush=True)
            shown, last_print = now_state, time.monotonic()
        if elapsed >= timeout:
            raise DemoError(
                f"timed out after {timeout:g} s waiting for {what}: {now_state}\n"
                f"last events in {namespace}:\n" + "\n".join(cluster.events(namespace))
            )
        time.sleep(1.0)


def deployment_state(cluster: Cluster, namespace: str, name: str) -> tuple[bool, str]:
    found = cluster.read("apps/v1", "Deployment", name, namespace)
    if found is None:
        return False, "not created yet"
    status, wanted = found.get("status") or {}, int(found["spec"].get("replicas", 1))
    available = int(status.get("availableReplicas") or 0)
    current = int(status.get("observedGeneration") or 0) >= int(found["metadata"]["generation"])
    return current and available >= wanted, f"{available}/{wanted} available"


def job_state(cluster: Cluster, namespace: str, name: str) -> tuple[bool, str]:
    found = cluster.read("batch/v1", "Job", name, namespace) or {}
    status = found.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            raise DemoError(
                f"Job {name} failed: {cond.get('reason')}: {cond.get('message')}\n"
                f"last events in {namespace}:\n" + "\n".join(cluster.events(namespace))
            )
        if cond.get("type") == "Complete" and cond.get("status") == "True":
            return True, "complete"
    return False, f"{status.get('active') or 0} running, {status.get('failed') or 0} failed"


def crd_established(cluster: Cluster, name: str) -> tuple[bool, str]:
    found = cluster.read("apiextensions.k8s.io/v1", "CustomResourceDefinition", name) or {}
    established = any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (found.get("status") or {}).get("conditions") or []
    )
    return established, "established" if established else "not established"


def watch_rollout(
    cluster: Cluster,
    namespace: str,
    judge: Callable[[Mapping[str, Any]], Outcome],
    timeout: float,
) -> Obj:
    """Print a `get fm -w` row for each change of the ForecastModel until `judge` says done; bounded."""
    api = f"{res.GROUP}/{res.VERSION}"
    deadline = time.monotonic() + timeout
    print(table_line(COLUMNS), flush=True)
    last: FmRow | None = None
    latest: Obj | None = None
    while (remaining := deadline - time.monotonic()) > 0:
        for obj in cluster.watch(api, res.KIND, namespace, MODEL, max(1, min(int(remaining), 60))):
            latest = obj
            row = fm_row(obj)
            if last is None or replace(row, created=None) != replace(last, created=None):
                print(table_line(row.cells(datetime.now(UTC))), flush=True)
                last = row
            outcome = judge(obj)
            if outcome.failed is not None:
                raise DemoError(f"{namespace}/{MODEL}: {outcome.failed}")
            if outcome.done:
                return obj
            if time.monotonic() >= deadline:
                break
    state = "; ".join(
        f"{kind}={c.get('status')} {c.get('reason')}: {c.get('message')}"
        for kind, c in conditions(latest or {}).items()
    )
    raise DemoError(
        f"timed out after {timeout:g} s watching {namespace}/{MODEL}: {state or 'no status yet'}\n"
        f"last events in {namespace}:\n" + "\n".join(cluster.events(namespace))
    )


# -- the demo --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    namespace: str
    context: str | None
    operator_image: str | None
    inference_image: str | None
    store_connection_string: str | None
    timeout: float
    progress_deadline: int
    out: Path
    chart: Path = CHART


def demo_sales() -> pd.DataFrame:
    """2 stores x 6 items x 240 days: enough for a model that trains in seconds."""
    from retail_forecast.core.data import validate_sales  # noqa: PLC0415
    from retail_forecast.core.schema import Freq  # noqa: PLC0415
    from retail_forecast.training.synth import synthesize  # noqa: PLC0415

    return validate_sales(synthesize(stores=2, items=6, periods=240, freq=Freq.DAILY, seed=11))


def train_versions(out: Path) -> dict[str, Manifest]:
    """Two small real models (different seeds, so different bytes): trained in seconds, as the
    operator tests train theirs; the rollout is the subject here, `forecast demo` shows the forecasts.
    Point forecasts only: no quantile heads to fit, and a smaller model in each ConfigMap."""
    from retail_forecast.core.data import build_panel  # noqa: PLC0415
    from retail_forecast.core.schema import Freq  # noqa: PLC0415
    from retail_forecast.training.pipeline import TrainConfig, train  # noqa: PLC0415

    panel, report = build_panel(demo_sales(), Freq.DAILY)
    trained = {}
    for seed, version in enumerate(VERSIONS):
        model_dir = out / f"model-{version}"
        if not (model_dir / MANIFEST_FILE).exists():
            config = TrainConfig(
                horizon=14,
                folds=2,
                trials=1,
                seed=seed,
                max_rows=5_000,
                search_rows=3_000,
                name=MODEL,
                version=version,
                fixed_params={"max_iter": 30},
                quantiles=(),
            )
            train(panel, report, model_dir, config, progress=lambda _: None)
        trained[version] = Manifest.load(model_dir)
        print(f"  model {version}: {model_dir} (sha256 {trained[version].sha256[:12]}…)", flush=True)
    return trained


def run(settings: Settings) -> int:
    ns, timeout = settings.namespace, settings.timeout
    operator_image = settings.operator_image or chart_default_image(settings.chart, "operator")
    inference_image = settings.inference_image or chart_default_image(settings.chart, "inference")
    cluster = Cluster(settings.context)
    try:
        _step(1, f"checking the cluster at {cluster.host}")
        print(f"  Kubernetes {cluster.check()}", flush=True)
        if cluster.read("v1", "Namespace", ns) is not None:
            raise DemoError(
                f"namespace {ns} exists (a previous demo?): remove it with `forecast demo-cluster --delete"
                f"{'' if ns == NAMESPACE else f' --namespace {ns}'}` first"
            )
        cluster.apply([namespace_object(ns)])
        print(f"  namespace {ns} created", flush=True)

        _step(2, "model store: two model versions published where the pods can fetch them")
        if settings.store_connection_string is None:
            cluster.apply([store_secret(ns, azurite_connection_string(ns)), *azurite_objects(ns)])
            print(f"  Azurite ({AZURITE_IMAGE}) as Deployment/Service {AZURITE}", flush=True)
            wait_for(
                cluster, ns, f"Deployment {AZURITE}", lambda: deployment_state(cluster, ns, AZURITE), timeout
            )
        else:
            cluster.apply([store_secret(ns, settings.store_connection_string)])
            print("  the store named by --store-connection-string", flush=True)
        trained = train_versions(settings.out.resolve())
        for version in VERSIONS:
            cluster.apply(
                [
                    model_configmap(ns, version, settings.out.resolve() / f"model-{version}"),
                    publish_job(ns, version, inference_image, int(timeout)),
                ]
            )
        for version in VERSIONS:
            name = f"publish-{version}"
            state = functools.partial(job_state, cluster, ns, name)
            wait_for(cluster, ns, f"Job {name} ({inference_image})", state, timeout)
        print(f"  published {', '.join(VERSIONS)} to {store_uri(ns)}", flush=True)

        _step(3, f"installing the operator from {settings.chart.name} ({operator_image})")
        crds = chart_crds(settings.chart)
        cluster.apply(crds)
        for crd in crds:
            name = crd["metadata"]["name"]
            wait_for(cluster, ns, f"CRD {name}", functools.partial(crd_established, cluster, name), timeout)
        cluster.forget_discovery()  # the new kinds are served now
        objects = render_chart(
            settings.chart, chart_values(ns, settings.operator_image), release=RELEASE, namespace=ns
        )
        ordered = install_order(objects)
        cluster.apply(ordered)
        print("  applied " + ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in ordered), flush=True)
        wait_for(
            cluster, ns, f"Deployment {OPERATOR}", lambda: deployment_state(cluster, ns, OPERATOR), timeout
        )

        first, second = VERSIONS
        _step(4, f"ForecastModel {MODEL} on version {first}, then the blue/green rollout to {second}")
        cluster.apply(
            [forecast_model(ns, first, trained[first].sha256, inference_image, settings.progress_deadline)]
        )
        watch_rollout(cluster, ns, first_rollout(first), timeout)
        print(f"  version {first} serves", flush=True)
        cluster.apply(
            [forecast_model(ns, second, trained[second].sha256, inference_image, settings.progress_deadline)]
        )
        print(f"  spec.model.version → {second}", flush=True)
        watch_rollout(cluster, ns, upgrade(second), timeout)
        print(f"  version {second} promoted; the old colour is scaled down after {SCALE_DOWN_DELAY_S} s")

        _step(5, "calling the service, and cleaning up")
        print(how_to_call(ns, settings.out.resolve()), flush=True)
        return 0
    finally:
        cluster.close()


def how_to_call(namespace: str, out: Path) -> str:
    request = out / "request.json"
    write_example_request(request)
    delete = "forecast demo-cluster --delete" + (
        "" if namespace == NAMESPACE else f" --namespace {namespace}"
    )
    return "\n".join(
        [
            f"  kubectl -n {namespace} get fm,deploy,svc,pods",
            f"  kubectl -n {namespace} port-forward service/{MODEL} 8080:80 &",
            f"  curl -s localhost:8080/v1/forecast -H 'Content-Type: application/json' -d @{request}",
            f"  clean up: {delete}   (the namespace and the chart's cluster-wide RBAC; the CRDs stay)",
        ]
    )


def write_example_request(path: Path) -> None:
    """A /v1/forecast request for two of the demo data's series, from the models' own training data."""
    from retail_forecast.core.schema import DATE, Freq  # noqa: PLC0415
    from retail_forecast.demo import forecast_request  # noqa: PLC0415

    manifest = Manifest.load(path.parent / f"model-{VERSIONS[-1]}")
    sales = demo_sales()
    origin = pd.Timestamp(sales[DATE].max()) - pd.Timedelta(days=7)
    request, _ = forecast_request(sales, origin, Freq.DAILY, manifest.min_history, 7, 2)
    path.write_text(request.model_dump_json(exclude_none=True))


def delete(settings: Settings) -> int:
    """The namespace (and all in it) and the chart's cluster-wide objects; CRDs stay, as Helm leaves them
    (deleting a CRD deletes every ForecastModel in the cluster)."""
    ns = settings.namespace
    cluster = Cluster(settings.context)
    try:
        cluster.check()
        objects = render_chart(
            settings.chart, chart_values(ns, settings.operator_image), release=RELEASE, namespace=ns
        )
        for obj in objects:
            if "namespace" not in obj["metadata"] and cluster.delete(
                obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
            ):
                print(f"deleted {obj['kind']}/{obj['metadata']['name']}", flush=True)
        if not cluster.delete("v1", "Namespace", ns):
            print(f"namespace {ns} does not exist", flush=True)
            return 0

        def gone() -> tuple[bool, str]:
            found = cluster.read("v1", "Namespace", ns)
            return found is None, "deleted" if found is None else str(
                (found.get("status") or {}).get("phase")
            )

        wait_for(cluster, ns, f"namespace {ns}", gone, settings.timeout)
        return 0
    finally:
        cluster.close()

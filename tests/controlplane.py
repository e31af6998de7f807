"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager on loopback.

No scheduler, kubelet or kube-proxy: pods stay Pending until a test plays the kubelet
(`make_deployment_available`). The controllers are real (Deployment, ReplicaSet, HPA, garbage collector,
namespace, service accounts), and so are admission (structural schemas, CEL), RBAC and the status
subresource. Every request is recorded in an audit log (JSON lines) with its user, verb and answer, so a
test can see exactly what a client called and whether anything was denied.

The binaries come from KUBEBUILDER_ASSETS (envtest's convention: a folder with kube-apiserver, etcd and
kubectl; kube-controller-manager too). Usable outside pytest:
`with ControlPlane(workdir, find_assets()) as cp: ... cp.admin_kubeconfig ...`.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import kubernetes.client
import kubernetes.config
import kubernetes.dynamic
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.inference.live import free_port
from tests.processes import Background, launch, terminate

ASSETS_VARIABLE: Final = "KUBEBUILDER_ASSETS"
BINARIES: Final = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_CIDR: Final = "10.96.0.0/16"
ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
# Everything a client asks, once per request (watches: when the stream starts, and when it ends).
AUDIT_POLICY: Final = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
T = TypeVar("T")


class AssetsMissing(Exception):  # noqa: N818 - a plain statement of the problem
    pass


def find_assets() -> Path:
    """The folder named by KUBEBUILDER_ASSETS; AssetsMissing says why it is unusable."""
    configured = os.environ.get(ASSETS_VARIABLE)
    if not configured:
        raise AssetsMissing(
            f"{ASSETS_VARIABLE} is not set: point it at a folder with etcd, kube-apiserver and "
            "kube-controller-manager (v1.28; .ci/run unpacks them into build/k8s-assets)"
        )
    folder = Path(configured)
    missing = [name for name in BINARIES if not os.access(folder / name, os.X_OK)]
    if missing:
        raise AssetsMissing(f"{ASSETS_VARIABLE}={folder} has no executable {', '.join(missing)}")
    return folder


def wait_until(predicate: Callable[[], T | None], timeout: float = 30, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what or predicate}")
        time.sleep(0.1)


# -- PKI -----------------------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def write(self, folder: Path, name: str) -> tuple[Path, Path]:
        cert, key = folder / f"{name}.crt", folder / f"{name}.key"
        cert.write_bytes(_pem_cert(self.cert))
        key.write_bytes(_pem_key(self.key))
        key.chmod(0o600)
        return cert, key


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> Issued:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return Issued(key, builder.sign(issuer.key if issuer else key, hashes.SHA256()))


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def certificate_authority(common_name: str) -> Issued:
    usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    return _certificate(
        _name(common_name),
        ec.generate_private_key(ec.SECP256R1()),
        None,
        [(x509.BasicConstraints(ca=True, path_length=None), True), (usage, True)],
    )


def issue(
    ca: Issued, common_name: str, organization: str | None = None, *, server_names: Sequence[str] = ()
) -> Issued:
    """A leaf certificate: a serving one when `server_names` are given, else a client one (CN = user)."""
    usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (usage, True),
    ]
    if server_names:
        extensions.append((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
        alternatives: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        extensions.append((x509.SubjectAlternativeName(alternatives), False))
    else:
        extensions.append((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))
    return _certificate(
        _name(common_name, organization), ec.generate_private_key(ec.SECP256R1()), ca, extensions
    )


def kubeconfig(
    server: str, ca_pem: bytes, users: Mapping[str, Mapping[str, Any]], current: str
) -> dict[str, Any]:
    """A kubeconfig with one context per user (named after it), all on one cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": dict(user)} for name, user in users.items()],
        "contexts": [{"name": name, "context": {"cluster": "test", "user": name}} for name in users],
        "current-context": current,
    }


def client_certificate_user(issued: Issued) -> dict[str, str]:
    return {
        "client-certificate-data": base64.b64encode(_pem_cert(issued.cert)).decode(),
        "client-key-data": base64.b64encode(_pem_key(issued.key)).decode(),
    }


def write_yaml(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False))
    path.chmod(0o600)
    return path


class Client:
    """The `kubernetes` package's dynamic client for one kubeconfig: any kind, CRDs included, as dicts.

    Discovery is fresh for each Client (a CRD applied a moment ago is found); no retries, so a refused
    port fails at once.
    """

    def __init__(self, kubeconfig_path: Path, context: str | None = None) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=str(kubeconfig_path),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        configuration.retries = 0
        self.api = kubernetes.client.ApiClient(configuration)
        self._cache = kubeconfig_path.with_name(f"discovery-{uuid.uuid4().hex}.json")
        self._dynamic: Any = None

    def resource(self, api_version: str, kind: str) -> Any:
        """The dynamic client's Resource: `.get/.create/.patch/.delete`, and subresources (`.status`)."""
        if self._dynamic is None:
            self._dynamic = kubernetes.dynamic.DynamicClient(self.api, cache_file=str(self._cache))
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def read(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            found = self.resource(api_version, kind).get(name=name, namespace=namespace)
        except kubernetes.dynamic.exceptions.NotFoundError:
            return None
        return dict(found.to_dict())

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        found = self.resource(api_version, kind).get(namespace=namespace, label_selector=selector)
        return [dict(item) for item in found.to_dict()["items"]]

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Server-side apply, as `kubectl apply --server-side --force-conflicts` does."""
        for obj in objects:
            self.resource(obj["apiVersion"], obj["kind"]).server_side_apply(
                body=dict(obj),
                name=obj["metadata"]["name"],
                namespace=obj["metadata"].get("namespace"),
                field_manager="tests",
                force_conflicts=True,
            )

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]
        self._cache.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- the control plane ---------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self) -> str:
        return f"--- {self.log_path} (last lines)\n" + "\n".join(
            self.log_path.read_text(errors="replace").splitlines()[-25:]
        )


class ControlPlane(Background):
    """etcd → kube-apiserver → kube-controller-manager in `workdir`; `stop()` ends all three.

    The admin kubeconfig authenticates with a client certificate in `system:masters` (as kind writes
    one). `start()` returns once the API server is ready and the controllers made the default
    ServiceAccount: about 10 s.
    """

    def __init__(self, workdir: Path, assets: Path, *, timeout: float = 120) -> None:
        self.workdir = workdir
        self.assets = assets
        self.timeout = timeout
        self.port = 0
        self._processes: list[_Process] = []
        self._ca: Issued | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        assert self._ca is not None, "not started"
        return _pem_cert(self._ca.cert)

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def admin(self) -> Client:
        return Client(self.admin_kubeconfig)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        for folder in ("logs", "etcd"):
            (self.workdir / folder).mkdir(exist_ok=True)
        ca = self._ca = certificate_authority("test-ca")
        front_proxy_ca = certificate_authority("front-proxy-ca")
        ca_file, ca_key_file = ca.write(pki, "ca")
        front_proxy_ca_file, _ = front_proxy_ca.write(pki, "front-proxy-ca")
        serving = issue(
            ca,
            "kube-apiserver",
            server_names=["127.0.0.1", "localhost", "kubernetes", "kubernetes.default.svc", "10.96.0.1"],
        ).write(pki, "apiserver")
        front_proxy = issue(front_proxy_ca, "front-proxy-client").write(pki, "front-proxy-client")
        signing = ec.generate_private_key(ec.SECP256R1())
        signing_key = pki / "sa.key"
        signing_key.write_bytes(_pem_key(signing))
        signing_public = pki / "sa.pub"
        signing_public.write_bytes(
            signing.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        audit_policy = write_yaml(self.workdir / "audit-policy.yaml", AUDIT_POLICY)

        etcd_client, etcd_peer, self.port, controllers_port = (free_port() for _ in range(4))
        write_yaml(
            self.admin_kubeconfig,
            kubeconfig(
                self.server,
                self.ca_pem,
                {"admin": client_certificate_user(issue(ca, "admin", "system:masters"))},
                "admin",
            ),
        )
        controllers_kubeconfig = write_yaml(
            self.workdir / "controller-manager.kubeconfig",
            kubeconfig(
                self.server,
                self.ca_pem,
                {"kcm": client_certificate_user(issue(ca, "system:kube-controller-manager"))},
                "kcm",
            ),
        )

        etcd_url = f"http://127.0.0.1:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self._launch(
            "etcd",
            "--name=test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--initial-cluster-state=new",
        )
        self._launch(
            "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={serving[0]}",
            f"--tls-private-key-file={serving[1]}",
            f"--client-ca-file={ca_file}",
            f"--requestheader-client-ca-file={front_proxy_ca_file}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={front_proxy[0]}",
            f"--proxy-client-key-file={front_proxy[1]}",
            "--authorization-mode=RBAC",
            # As on clusters that enforce it (OpenShift): blockOwnerDeletion needs update on finalizers.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={signing_public}",
            f"--service-account-signing-key-file={signing_key}",
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={self.audit_log}",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        )
        self._wait(self._api_ready, "API server with its bootstrap RBAC policy")
        self._launch(
            "kube-controller-manager",
            f"--kubeconfig={controllers_kubeconfig}",
            f"--authentication-kubeconfig={controllers_kubeconfig}",
            f"--authorization-kubeconfig={controllers_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={controllers_port}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={signing_key}",
            f"--root-ca-file={ca_file}",
            f"--cluster-signing-cert-file={ca_file}",
            f"--cluster-signing-key-file={ca_key_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
        )
        self._wait(self._controllers_ready, "the controllers' default ServiceAccount")

    def _launch(self, name: str, *args: str) -> None:
        log_path = self.workdir / "logs" / f"{name}.log"
        self._processes.append(_Process(name, launch([str(self.assets / name), *args], log_path), log_path))

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            exited = [p for p in self._processes if p.popen.poll() is not None]
            if exited or time.monotonic() > deadline:
                why = f"{', '.join(p.name for p in exited)} exited" if exited else f"{self.timeout:.0f} s"
                logs = "\n".join(p.tail() for p in exited or self._processes)
                raise RuntimeError(f"control plane: no {what} ({why})\n{logs}")
            time.sleep(0.2)

    def _api_ready(self) -> bool:
        """Serving, with the bootstrap roles the controller manager needs (else it may exit at start).

        The cluster roles come first in the bootstrap; the namespaced binding that lets the controller
        manager read the request-header CA in kube-system comes later, so the authorizer is asked too.
        """
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": "system:kube-controller-manager",
                "resourceAttributes": {
                    "namespace": "kube-system",
                    "verb": "get",
                    "resource": "configmaps",
                    "name": "extension-apiserver-authentication",
                },
            },
        }
        try:
            with self.admin() as client:
                role = client.read(
                    "rbac.authorization.k8s.io/v1", "ClusterRole", "system:kube-controller-manager"
                )
                answer = client.resource("authorization.k8s.io/v1", "SubjectAccessReview").create(body=review)
        except (
            kubernetes.client.ApiException,
            kubernetes.dynamic.exceptions.ResourceNotFoundError,  # discovery: not every group served yet
            urllib3.exceptions.HTTPError,
        ):
            return False
        return role is not None and bool(answer.status.allowed)

    def _controllers_ready(self) -> bool:
        with self.admin() as client:
            return client.read("v1", "ServiceAccount", "default", "default") is not None

    def stop(self) -> None:
        """SIGTERM in reverse start order, SIGKILL after 10 s; every process is waited for."""
        while self._processes:
            terminate(self._processes.pop().popen, grace=10)

    # -- acting as a ServiceAccount ------------------------------------------------------------------------

    def token(self, namespace: str, service_account: str, *, seconds: int = 3600) -> str:
        """A bound token for the ServiceAccount, from the TokenRequest API (what the kubelet projects)."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": seconds},
        }
        with self.admin() as client:
            accounts = client.resource("v1", "ServiceAccount")
            answer = accounts.subresources["token"].create(
                body=request, name=service_account, namespace=namespace
            )
        return str(answer.status.token)

    def token_kubeconfig(self, path: Path, namespace: str, service_account: str) -> Path:
        user = f"system:serviceaccount:{namespace}:{service_account}"
        return write_yaml(
            path,
            kubeconfig(
                self.server, self.ca_pem, {user: {"token": self.token(namespace, service_account)}}, user
            ),
        )

    def audit(self, user: str) -> list[AuditEntry]:
        """The requests `user` made so far (each once), in the order the server finished them."""
        entries: dict[str, AuditEntry] = {}
        with self.audit_log.open() as log:
            for line in log:
                event = json.loads(line)
                if event["user"].get("username") == user:
                    entries[event["auditID"]] = AuditEntry.of(event)
        return list(entries.values())


@dataclass(frozen=True)
class AuditEntry:
    """One request: its verb, its resource (with /subresource; "" for a non-resource URL) and its answer."""

    verb: str
    group: str
    resource: str
    namespace: str
    name: str
    uri: str
    code: int

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> AuditEntry:
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += f"/{ref['subresource']}"
        return cls(
            verb=event["verb"],
            group=ref.get("apiGroup", ""),
            resource=resource,
            namespace=ref.get("namespace", ""),
            name=ref.get("name", ""),
            uri=event["requestURI"],
            code=int((event.get("responseStatus") or {}).get("code", 0)),
        )


# -- objects and the kubelet's part ----------------------------------------------------------------------


def apply_crds(client: Client, crds: Iterable[Mapping[str, Any]]) -> None:
    """Apply CustomResourceDefinitions and wait until each is Established (served)."""
    crds = list(crds)
    client.apply(crds)
    for crd in crds:
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            found = client.read("apiextensions.k8s.io/v1", "CustomResourceDefinition", name) or {}
            # A fresh CRD's status has `"conditions": null` (no omitempty) until the API server sets them.
            conditions = found.get("status", {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        wait_until(established, what=f"CRD {name} Established")


def create_namespace(client: Client, name: str) -> None:
    """A namespace, once the controllers gave it the default ServiceAccount that its pods need."""
    client.resource("v1", "Namespace").create(body={"metadata": {"name": name}})
    wait_until(
        lambda: client.read("v1", "ServiceAccount", "default", name), what=f"{name}/default ServiceAccount"
    )


def _ready_status() -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    conditions = [
        {"type": kind, "status": "True", "lastTransitionTime": now}
        for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
    ]
    return {"status": {"phase": "Running", "startTime": now, "conditions": conditions}}


def _is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def mark_pods_ready(client: Client, namespace: str, deployment: str) -> int:
    """Play the kubelet once: every live pod of the Deployment becomes Running and Ready (pods/status).

    Returns how many pods it marked.
    """
    found = client.read("apps/v1", "Deployment", deployment, namespace)
    assert found is not None, f"no Deployment {namespace}/{deployment}"
    labels = found["spec"]["selector"]["matchLabels"]
    return mark_selected_pods_ready(
        client, namespace, ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    )


def mark_selected_pods_ready(client: Client, namespace: str, selector: str | None = None) -> int:
    """Play the kubelet once for the namespace's pods (those `selector` picks; all when None).

    One list, then a status write per pod that is not Ready yet; returns how many it marked.
    """
    pods = client.resource("v1", "Pod")
    marked = 0
    for pod in client.list("v1", "Pod", namespace, selector):
        if not pod["metadata"].get("deletionTimestamp") and not _is_ready(pod):
            try:
                pods.status.patch(
                    body=_ready_status(),
                    name=pod["metadata"]["name"],
                    namespace=namespace,
                    content_type="application/merge-patch+json",
                )
            except kubernetes.dynamic.exceptions.NotFoundError:
                continue  # its ReplicaSet deleted it since the list: no kubelet reports on a deleted pod
            marked += 1
    return marked


def deployment_available(client: Client, namespace: str, name: str) -> bool:
    """What `kubectl rollout status` waits for: the current generation fully updated and available."""
    found = client.read("apps/v1", "Deployment", name, namespace)
    if found is None:
        return False
    status, wanted = found.get("status", {}), found["spec"]["replicas"]
    return bool(
        status.get("observedGeneration", 0) >= found["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
    )


def make_deployment_available(client: Client, namespace: str, name: str, timeout: float = 60) -> None:
    """Play the kubelet until the Deployment and ReplicaSet controllers count every replica available."""

    def available() -> bool:
        mark_pods_ready(client, namespace, name)
        return deployment_available(client, namespace, name)

    wait_until(available, timeout, what=f"Deployment {namespace}/{name} available")

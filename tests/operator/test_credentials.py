"""The operator's credentials come from the `kubernetes` package: in-cluster files, else a kubeconfig.

Offline: which source wins, and the error when there is none. Against a real API server
(tests/controlplane.py): the operator's own client authenticates with a client certificate, a
ServiceAccount token, an exec plugin and in-cluster files, and `forecast operator --context` runs from a
kubeconfig; the audit log names the user every request ran as.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.config.incluster_config
import pytest
import yaml

from retail_forecast.operator import resources as res
from retail_forecast.operator.handlers import connection_info
from retail_forecast.operator.kube import ApiError, Kube, NoKubernetesApi, load_configuration
from tests.controlplane import (
    ControlPlane,
    kubeconfig,
    wait_until,
    write_yaml,
)
from tests.inference.live import free_port, run_cli
from tests.operator.conftest import FM_API, OPERATOR_SA, namespace_for_the_operator
from tests.operator.process import OperatorProcess


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def in_cluster_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cluster: None) -> tuple[Path, Path]:
    """Where the kubelet mounts a pod's token and CA, here in tmp_path (the env says host and port)."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    return token, ca


# -- offline: where the credentials come from --------------------------------------------------------------


def test_no_cluster_and_no_kubeconfig_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cluster: None
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(NoKubernetesApi, match=r"not in a cluster, and the kubeconfig \(.*missing\)"):
        load_configuration()


def test_forecast_operator_without_a_cluster_exits_at_once_with_the_reason(tmp_path: Path) -> None:
    result = run_cli(["operator", "--liveness", ""], env={"KUBECONFIG": str(tmp_path / "missing")})
    assert result.returncode == 2, result.stderr
    assert "forecast: error: no Kubernetes API: not in a cluster" in result.stderr


def test_in_cluster_first_unless_a_context_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_cluster_files: tuple[Path, Path]
) -> None:
    servers = {"a": "https://127.0.0.2:6443", "b": "https://127.0.0.3:6443"}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": s}} for n, s in servers.items()],
        "users": [{"name": n, "user": {"token": f"token-{n}"}} for n in servers],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in servers],
        "current-context": "a",
    }
    write_yaml(tmp_path / "kubeconfig", config)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    assert load_configuration().host == servers["a"]  # no in-cluster files yet: the current context
    assert load_configuration("b").host == servers["b"]

    token, ca = in_cluster_files
    token.write_text("pod-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.4")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    in_cluster = load_configuration()
    assert in_cluster.host == "https://127.0.0.4:443"
    assert in_cluster.ssl_ca_cert == str(ca)
    assert load_configuration("b").host == servers["b"]


# -- against a real API server ---------------------------------------------------------------------------


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace with a ServiceAccount that may read (ClusterRole `view`) in it, and the CRDs."""
    name = f"cred-{uuid.uuid4().hex[:8]}"
    with control_plane.admin() as client:
        binding = {"kind": "RoleBinding", "metadata": {"name": "view", "namespace": name}}
        namespace_for_the_operator(client, name, binding, "view")
    yield name
    with control_plane.admin() as client:
        client.resource("v1", "Namespace").delete(name=name)


def _list_deployments(namespace: str) -> list[dict[str, Any]]:
    """The operator's own client, built the way the operator builds it."""

    async def run() -> list[dict[str, Any]]:
        kube = Kube(load_configuration(), res.MANAGER)
        try:
            return await kube.list("apps", "v1", "deployments", namespace, {"a": "b"})
        finally:
            await kube.close()

    return asyncio.run(run())


def _service_account_user(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:{OPERATOR_SA}"


@pytest.mark.parametrize("how", ["client-certificate", "token", "exec-plugin"])
def test_the_operator_client_authenticates_from_a_kubeconfig(
    how: str,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_cluster: None,
) -> None:
    path = tmp_path / "kubeconfig"
    if how == "client-certificate":
        user = "admin"
        config = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
        write_yaml(path, config)
    else:
        user = _service_account_user(namespace)
        token = control_plane.token(namespace, OPERATOR_SA)
        credential: dict[str, Any] = {"token": token}
        if how == "exec-plugin":  # a credential plugin (like kubelogin) prints an ExecCredential
            printed = {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"token": token},
            }
            (tmp_path / "credential.json").write_text(json.dumps(printed))
            credential = {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": "cat",
                    "args": [str(tmp_path / "credential.json")],
                    "interactiveMode": "Never",
                }
            }
        write_yaml(path, kubeconfig(control_plane.server, control_plane.ca_pem, {user: credential}, user))
    monkeypatch.setenv("KUBECONFIG", str(path))

    before = len(control_plane.audit(user))
    assert _list_deployments(namespace) == []
    calls = [c for c in control_plane.audit(user)[before:] if c.resource]  # "": discovery (/api, /apis)
    assert [(c.verb, c.resource, c.namespace, c.code) for c in calls] == [
        ("list", "deployments", namespace, 200)
    ]
    # kopf is given the same credentials.
    info = connection_info(load_configuration())
    assert info.server == control_plane.server
    if how == "client-certificate":
        assert (info.token, info.certificate_path is not None) == (None, True)
    else:
        assert (info.scheme, info.token, info.certificate_path) == ("Bearer", token, None)


def test_the_operator_client_authenticates_in_a_cluster(
    control_plane: ControlPlane,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    in_cluster_files: tuple[Path, Path],
) -> None:
    token, ca = in_cluster_files
    token.write_text(control_plane.token(namespace, OPERATOR_SA))
    ca.write_bytes(control_plane.ca_pem)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(control_plane.port))
    user = _service_account_user(namespace)
    before = len(control_plane.audit(user))
    assert _list_deployments(namespace) == []
    assert [(c.verb, c.code) for c in control_plane.audit(user)[before:] if c.resource] == [("list", 200)]

    # A token the API server does not accept is an error answer, not a silent anonymous request.
    token.write_text("not-a-token")
    with pytest.raises(ApiError) as refused:
        _list_deployments(namespace)
    assert refused.value.status == 401


def test_forecast_operator_runs_from_a_named_kubeconfig_context(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """`--context` picks the admin's client certificate over a current context that leads nowhere."""
    admin = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    config = kubeconfig(
        control_plane.server,
        control_plane.ca_pem,
        {"admin": admin["users"][0]["user"], "nowhere": {"token": "x"}},
        "nowhere",
    )
    config["clusters"].append({"name": "nowhere", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}})
    config["contexts"][1]["context"]["cluster"] = "nowhere"
    write_yaml(tmp_path / "kubeconfig", config)
    model = {
        "apiVersion": FM_API,
        "kind": res.KIND,
        "metadata": {"name": "demand"},
        "spec": {
            "model": {"name": "demand", "version": "1", "storeUri": f"file://{tmp_path / 'no-store'}"},
            "serving": {"image": "registry.local/inference:1"},
        },
    }
    operator = OperatorProcess(
        ["operator", "--context", "admin", "--namespace", namespace],
        {"KUBECONFIG": str(tmp_path / "kubeconfig")},
        tmp_path / "operator.log",
    )
    operator.start()
    try:
        with control_plane.admin() as client:
            client.resource(FM_API, res.KIND).create(body=model, namespace=namespace)

            def verification_failed() -> bool:
                found = client.read(FM_API, res.KIND, "demand", namespace) or {}
                conditions = found.get("status", {}).get("conditions", [])
                return any(c["reason"] == "ModelVerificationFailed" for c in conditions)

            def warned() -> bool:
                events = client.list("v1", "Event", namespace)
                return any(e["reason"] == "ModelVerificationFailed" for e in events)

            wait_until(verification_failed, what=f"ModelVerified=False; operator log:\n{operator.output()}")
            wait_until(warned, what="the ModelVerificationFailed event")
    finally:
        exit_code = operator.stop()
    assert exit_code == 0, operator.output()
    used = {(c.verb, c.resource) for c in control_plane.audit("admin") if c.namespace == namespace}
    # kopf watched (its client), the reconciler read and wrote the status (ours), kopf posted the event.
    expected = {("watch", "forecastmodels"), ("get", "forecastmodels"), ("patch", "forecastmodels/status")}
    assert expected <= used
    assert ("create", "events") in used

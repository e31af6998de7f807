"""The operator's credentials come from the `kubernetes` package: in-cluster files, else a kubeconfig.

Offline: which source wins, and the error when there is none.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes.config.incluster_config
import pytest
import yaml

from retail_forecast.operator.kube import NoKubernetesApi, api_path, load_configuration
from tests.inference.live import run_cli


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
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
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


def test_api_paths_follow_the_kubernetes_layout() -> None:
    assert api_path("", "v1", "services", "ns", "a") == "/api/v1/namespaces/ns/services/a"
    assert api_path("apps", "v1", "deployments", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert api_path("retailforecast.io", "v1alpha1", "forecastmodels", None) == (
        "/apis/retailforecast.io/v1alpha1/forecastmodels"
    )

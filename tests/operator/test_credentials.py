from __future__ import annotations

from pathlib import Path

import pytest

from retail_forecast.operator.kube import Credentials, api_path


def test_service_account_token_is_reread_as_the_kubelet_rotates_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    credentials = Credentials(server="https://127.0.0.1:6443", token="first", token_file=str(token))
    assert credentials.bearer() == "first"
    token.write_text("rotated\n")
    assert credentials.bearer() == "rotated"


def test_explicit_server_for_local_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORECAST_KUBE_SERVER", "http://127.0.0.1:8001/")
    monkeypatch.setenv("FORECAST_KUBE_INSECURE", "true")
    credentials = Credentials.discover()
    assert credentials.server == "http://127.0.0.1:8001" and credentials.insecure
    assert credentials.bearer() is None


def test_no_api_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORECAST_KUBE_SERVER", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="not in a cluster and FORECAST_KUBE_SERVER is not set"):
        Credentials.discover()


def test_api_paths_follow_the_kubernetes_layout() -> None:
    assert api_path("", "v1", "services", "ns", "a") == "/api/v1/namespaces/ns/services/a"
    assert api_path("apps", "v1", "deployments", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert api_path("retailforecast.io", "v1alpha1", "forecastmodels", None) == (
        "/apis/retailforecast.io/v1alpha1/forecastmodels"
    )

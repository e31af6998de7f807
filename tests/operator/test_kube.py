"""The operator's API client (operator/src/kube.py) on a real API server: what it asks of discovery."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from retail_forecast.operator import resources as res
from retail_forecast.operator.kube import Kube, load_configuration
from tests.controlplane import ControlPlane
from tests.operator.conftest import OPERATOR_SA

CONCURRENT_CALLS = 24


def test_concurrent_first_calls_share_one_discovery(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reconcile of a fresh operator starts at once: each API path is discovered once, not once
    per worker thread (seen: 64 discovery requests and "load cache error" in one benchmark run)."""
    kubeconfig = control_plane.token_kubeconfig(tmp_path / "kubeconfig", namespace, OPERATOR_SA)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    async def first_calls() -> None:
        kube = Kube(load_configuration(), res.MANAGER)
        try:
            calls = [
                kube.list("apps", "v1", "deployments", namespace, res.labels(f"fm-{i}"))
                if i % 2
                else kube.get("", "v1", "services", namespace, f"fm-{i}")
                for i in range(CONCURRENT_CALLS)
            ]
            await asyncio.gather(*calls)
        finally:
            await kube.close()

    asyncio.run(first_calls())
    entries = control_plane.audit(f"system:serviceaccount:{namespace}:{OPERATOR_SA}")
    discovery = Counter(e.uri for e in entries if not e.resource)  # /version, /api, /apis, /apis/apps/v1…
    assert discovery, "no discovery request in the audit log"
    assert {uri: n for uri, n in discovery.items() if n > 1} == {}, discovery
    assert sum(1 for e in entries if e.resource) == CONCURRENT_CALLS


def test_calls_after_close_are_cancelled_not_failed(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf closes the client in its cleanup handler before it cancels the reconciles still running: their
    next call ends them as cancelled (quietly, as kopf's own cancellation would a moment later) instead of
    raising RuntimeError("cannot schedule new futures after shutdown") into the reconcile."""
    kubeconfig = control_plane.token_kubeconfig(tmp_path / "kubeconfig", namespace, OPERATOR_SA)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    async def call_after_close() -> None:
        kube = Kube(load_configuration(), res.MANAGER)
        assert await kube.get("", "v1", "services", namespace, "absent") is None
        await kube.close()
        with pytest.raises(asyncio.CancelledError, match="services/absent: the operator is stopping"):
            await kube.get("", "v1", "services", namespace, "absent")

    asyncio.run(call_after_close())

"""One reconcile (operator/src/reconcile.py) on a real API server, called directly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from retail_forecast.operator import resources as res
from retail_forecast.operator.failures import PERMANENT_FIRST_SECONDS
from retail_forecast.operator.kube import Kube, load_configuration
from retail_forecast.operator.reconcile import Reconciler
from retail_forecast.operator.rollout import Event
from tests.controlplane import ControlPlane
from tests.operator.conftest import FM_API, OPERATOR_SA, Cluster, Store, forecast_model


def test_an_unexpected_error_is_shown_as_a_condition_and_retried(
    control_plane: ControlPlane,
    namespace: str,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug (here: a clock that raises) is a failure like a refused write: a Warning, the Reconciled
    condition with the error, and a retry delay; it never escapes to leave the object unreconciled."""
    kubeconfig = control_plane.token_kubeconfig(tmp_path / "kubeconfig", namespace, OPERATOR_SA)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", store.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    events: list[Event] = []

    def broken_clock() -> float:
        raise RuntimeError("the clock is broken")

    async def reconcile() -> float | None:
        kube = Kube(load_configuration(), res.MANAGER)
        try:
            reconciler = Reconciler(kube, lambda _, event: events.append(event), clock=broken_clock)
            return await reconciler.reconcile(namespace, "demand")
        finally:
            await kube.close()

    with control_plane.admin() as client:
        client.resource(FM_API, res.KIND).create(body=forecast_model(store), namespace=namespace)
        assert asyncio.run(reconcile()) == PERMANENT_FIRST_SECONDS
        assert Cluster(client, namespace).condition("Reconciled") == ("False", "UnexpectedError")
    assert [(e.type, e.reason) for e in events] == [("Warning", "UnexpectedError")]
    assert "RuntimeError: the clock is broken" in events[0].message


def test_a_spec_changed_while_an_attempt_fails_is_not_held_back_by_its_backoff(
    control_plane: ControlPlane,
    namespace: str,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backoff after a failure holds back only the intent that failed: version 2, written while the
    attempt on version 1 was failing, is reconciled by the next call (its watch event), not a backoff
    later. Before, the backoff held whatever intent it read after the failure, so the new version waited
    (10 s here; up to 10 minutes after repeated permanent failures)."""
    kubeconfig = control_plane.token_kubeconfig(tmp_path / "kubeconfig", namespace, OPERATOR_SA)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", store.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)

    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        calls = 0

        def clock() -> float:
            """Fails the first attempt just after the spec moved on to version 2."""
            nonlocal calls
            calls += 1
            if calls == 1:
                cluster.patch_spec({"model": {"version": "2"}})
                raise RuntimeError("the attempt on version 1 fails")
            return time.time()

        async def reconcile_twice() -> tuple[float | None, float | None]:
            kube = Kube(load_configuration(), res.MANAGER)
            try:
                reconciler = Reconciler(kube, lambda _, __: None, clock=clock)
                first = await reconciler.reconcile(namespace, "demand")
                return first, await reconciler.reconcile(namespace, "demand")
            finally:
                await kube.close()

        client.resource(FM_API, res.KIND).create(body=forecast_model(store), namespace=namespace)
        failed, second = asyncio.run(reconcile_twice())
        assert failed == PERMANENT_FIRST_SECONDS
        assert calls == 2, "the second call was held back by the first one's backoff"
        preview = cluster.deployment("demand-blue")
        assert preview["metadata"]["labels"][res.LABEL_VERSION] == "2"
        assert second is not None  # the preview's deadline

"""One reconcile (operator/src/reconcile.py) on a real API server, called directly."""

from __future__ import annotations

import asyncio
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

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
from tests.controlplane import ControlPlane, make_deployment_available
from tests.operator.conftest import FM_API, OPERATOR_SA, Cluster, Store, forecast_model


@pytest.fixture
def as_the_operator(
    control_plane: ControlPlane, namespace: str, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process's kubeconfig and store credentials are the operator's: a Reconciler made here acts as
    its ServiceAccount (RBAC and the audit log see the operator)."""
    kubeconfig = control_plane.token_kubeconfig(tmp_path / "kubeconfig", namespace, OPERATOR_SA)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", store.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)


def test_an_unexpected_error_is_shown_as_a_condition_and_retried(
    control_plane: ControlPlane, namespace: str, store: Store, as_the_operator: None
) -> None:
    """A bug (here: a clock that raises) is a failure like a refused write: a Warning, the Reconciled
    condition with the error, and a retry delay; it never escapes to leave the object unreconciled."""
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
    control_plane: ControlPlane, namespace: str, store: Store, as_the_operator: None
) -> None:
    """The backoff after a failure holds back only the intent that failed: version 2, written while the
    attempt on version 1 was failing, is reconciled by the next call (its watch event), not a backoff
    later. Before, the backoff held whatever intent it read after the failure, so the new version waited
    (10 s here; up to 10 minutes after repeated permanent failures)."""

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


def test_a_promotion_racing_a_new_version_is_recorded_and_the_new_version_previewed_beside_it(
    control_plane: ControlPlane, namespace: str, store: Store, as_the_operator: None
) -> None:
    """Version 2 arrives while the operator promotes version 1 (CI met this race): the promotion's status
    write is a 409. Its children (Service, HPA, CronJob) are written by then, so the status records the
    promotion anyway, and version 2 is previewed on the other colour. Before, the reconcile decided again
    from the stale status: it deleted the HPA and the CronJob and re-pointed blue, which served the
    traffic, at version 2, never promoted."""
    user = f"system:serviceaccount:{namespace}:{OPERATOR_SA}"
    batch = {"schedule": "0 2 1 1 *", "input": "/data/sales.parquet", "output": "azureblob://runs/demand"}

    with control_plane.admin() as client:
        cluster = Cluster(client, namespace)
        race = False

        def clock() -> float:
            """While the promotion is decided, version 2 lands (once)."""
            nonlocal race
            if race:
                race = False
                cluster.patch_spec({"model": {"version": "2"}})
            return time.time()

        def active_and_preview() -> tuple[str | None, str | None]:
            status = (cluster.read(FM_API, res.KIND, "demand") or {}).get("status") or {}
            return status.get("activeVersion"), status.get("previewVersion")

        async def run() -> list[tuple[str | None, str | None]]:
            nonlocal race
            kube = Kube(load_configuration(), res.MANAGER)
            seen = []
            try:
                reconciler = Reconciler(kube, lambda _, __: None, clock=clock)
                await reconciler.reconcile(namespace, "demand")  # the preview of version 1 on blue
                await asyncio.to_thread(make_deployment_available, client, namespace, "demand-blue")
                race = True
                await reconciler.reconcile(namespace, "demand")  # promotes 1; 2 lands before the status
                seen.append(active_and_preview())
                await reconciler.reconcile(namespace, "demand")  # version 2's watch event
                seen.append(active_and_preview())
            finally:
                await kube.close()
            return seen

        body = forecast_model(store)
        body["spec"]["batch"] = batch
        client.resource(FM_API, res.KIND).create(body=body, namespace=namespace)
        assert asyncio.run(run()) == [("1", None), ("1", "2")]
        assert cluster.deployment("demand-blue")["metadata"]["labels"][res.LABEL_VERSION] == "1"
        assert cluster.deployment("demand-green")["metadata"]["labels"][res.LABEL_VERSION] == "2"
        deleted = [
            entry.resource
            for entry in control_plane.audit(user)
            if entry.verb == "delete" and entry.resource in {"cronjobs", "horizontalpodautoscalers"}
        ]
        assert deleted == [], "the promotion's children were taken back"

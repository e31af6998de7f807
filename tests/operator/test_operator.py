"""The real operator (kopf + handlers.py) against the API emulator, with the model store on Azurite.

Nothing here knows the operator's internals beyond its documented contract (docs: DESIGN.md, ForecastModel):
the tests create and patch ForecastModels through the emulator, play the Deployment controller and kubelet
explicitly (`mark_deployment_available`, `mark_deployment_stuck`), and read back the objects, the status and
the core v1 Events. Reconcile calls are observed (not altered) only to know when the operator has looked,
so that "nothing happened" can be asserted without sleeping.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import kmock
import kopf
import pytest
import pytest_asyncio
import yaml

from retail_forecast.operator import handlers
from retail_forecast.operator import resources as res
from retail_forecast.operator.reconcile import Reconciler
from retail_forecast.operator.rollout import Event
from tests.azurite import Azurite
from tests.operator.conftest import Store
from tests.operator.kube import (
    DEPLOYMENTS,
    FORECASTMODELS,
    ApiServer,
    mark_deployment_available,
    mark_deployment_stuck,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

NS: Final = "default"
SERVICES: Final = kmock.resource("v1/services")
HPAS: Final = kmock.resource("autoscaling/v2/horizontalpodautoscalers")
EVENTS: Final = kmock.resource("v1/events")
IMAGE: Final = "registry.local/inference:1"
WRITES: Final = {"POST", "PUT", "PATCH", "DELETE"}
OWNED: Final = {"forecastmodels", "deployments", "services", "horizontalpodautoscalers", "events"}
T = TypeVar("T")


def forecast_model(
    name: str,
    store: Store,
    version: str = "1",
    *,
    scale_down_delay: int = 1,
    progress_deadline: int = 10,
    pin: str | None = None,
) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "demand", "version": version, "storeUri": store.uri}
    if pin is not None:
        model["sha256"] = pin
    return {
        "apiVersion": "retailforecast.io/v1alpha1",
        "kind": "ForecastModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": model,
            "serving": {"image": IMAGE},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4},
            "rollout": {
                "progressDeadlineSeconds": progress_deadline,
                "scaleDownDelaySeconds": scale_down_delay,
                "autoPromote": True,
            },
        },
    }


# -- the operator, in-process ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One finished reconcile of one ForecastModel: when it started (the emulator's resourceVersion then)
    and whether it raised."""

    name: str
    started_rv: int
    error: BaseException | None


@dataclass
class Operator:
    """`kopf.operator` with the real handlers, in a thread with its own event loop, as in its own process.

    kopf cancels every task of its loop that it did not find at startup when it stops, and the test's
    own tasks must not be among them; a thread also keeps the operator's loop apart from the emulator's.
    """

    api: ApiServer
    calls: list[Call] = field(default_factory=list)
    emitted: list[tuple[str, Event]] = field(default_factory=list)
    thread: threading.Thread | None = None
    stop_flag: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None
    active: int = 0

    async def start(self) -> None:
        assert self.thread is None, "already running"
        _reset_handlers()
        self.stop_flag = threading.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="operator", daemon=True)
        self.thread.start()
        await eventually(lambda: ready.is_set() or not self.running, what="the operator is ready")
        assert self.running, self.failure

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    clusterwide=False,
                    namespaces=[NS],
                    standalone=True,
                    stop_flag=self.stop_flag,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:
            self.failure = exc
            raise

    async def stop(self) -> None:
        thread, self.thread = self.thread, None
        if thread is None:
            return
        self.stop_flag.set()
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive(), "the operator did not stop within 30 s"
        assert self.failure is None, self.failure
        _reset_handlers()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def calls_for(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def settled(self, name: str) -> bool:
        """No reconcile runs, and one that started after the last change to `name` or its objects ended."""
        latest = max(
            int(obj["metadata"]["resourceVersion"]) for obj in [fm(self.api, name), *owned(self.api, name)]
        )
        return self.active == 0 and any(c.started_rv >= latest for c in self.calls_for(name))


def _reset_handlers() -> None:
    """What a dead process leaves behind: nothing (timers, retry counts and the client are in memory)."""
    handlers._timers.clear()
    handlers._failures.clear()
    handlers._state.clear()
    handlers._tasks.clear()


@pytest_asyncio.fixture
async def operator(
    kube: ApiServer, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Operator]:
    # The emulator speaks plain HTTP without authentication: a kubeconfig with a server and nothing else.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": str(kube.url)}}],
        "users": [{"name": "anonymous", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "anonymous"}}],
        "current-context": "emulator",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", store.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    op = Operator(kube)
    original_reconcile = Reconciler.reconcile
    original_emit = handlers._emit

    async def observed_reconcile(self: Reconciler, namespace: str, name: str) -> float | None:
        started = int(kube.resource_version)
        op.active += 1
        try:
            result = await original_reconcile(self, namespace, name)
        except Exception as exc:
            op.calls.append(Call(name, started, exc))
            raise
        else:
            op.calls.append(Call(name, started, None))
            return result
        finally:
            op.active -= 1

    def observed_emit(body: dict[str, Any], event: Event) -> None:
        op.emitted.append((body["metadata"]["name"], event))
        original_emit(body, event)

    monkeypatch.setattr(Reconciler, "reconcile", observed_reconcile)
    monkeypatch.setattr(handlers, "_emit", observed_emit)
    await op.start()
    try:
        yield op
    finally:
        await op.stop()
        _reset_handlers()


# -- reading the cluster -----------------------------------------------------------------------------------


async def eventually(predicate: Callable[[], T | None], timeout: float = 20, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        await asyncio.sleep(0.05)


def fm(api: ApiServer, name: str) -> dict[str, Any]:
    found = api.read(FORECASTMODELS, NS, name)
    assert found is not None, f"ForecastModel {name} is gone"
    return found


def status(api: ApiServer, name: str) -> dict[str, Any]:
    found: dict[str, Any] = fm(api, name).get("status") or {}
    return found


def condition(api: ApiServer, name: str, kind: str) -> dict[str, Any]:
    for cond in status(api, name).get("conditions", []):
        if cond["type"] == kind:
            found: dict[str, Any] = cond
            return found
    return {}


def has_condition(api: ApiServer, name: str, kind: str, state: str, reason: str | None = None) -> bool:
    cond = condition(api, name, kind)
    return cond.get("status") == state and (reason is None or cond.get("reason") == reason)


def deployment(api: ApiServer, name: str) -> dict[str, Any] | None:
    return api.read(DEPLOYMENTS, NS, name)


def selected_color(api: ApiServer, service: str) -> str | None:
    found = api.read(SERVICES, NS, service)
    return None if found is None else str(found["spec"]["selector"][res.LABEL_COLOR])


def hpa_target(api: ApiServer, name: str) -> str | None:
    found = api.read(HPAS, NS, name)
    return None if found is None else str(found["spec"]["scaleTargetRef"]["name"])


def events(api: ApiServer, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in api.list_objects(EVENTS, NS)
        if e["involvedObject"].get("name") == name
        and e["involvedObject"].get("kind") == res.KIND
        and (reason is None or e["reason"] == reason)
    ]


def owned(api: ApiServer, name: str) -> list[dict[str, Any]]:
    """Everything the operator would create for ForecastModel `name`."""
    selector = f"{res.LABEL_INSTANCE}={name}"
    return [obj for kind in (DEPLOYMENTS, SERVICES, HPAS) for obj in api.list_objects(kind, NS, selector)]


def writes_since(api: ApiServer, index: int) -> list[str]:
    """Writes the emulator received (after request number `index`) to the kinds the operator manages."""
    found = []
    for request in list(api)[index:]:
        method = str(request.method.value).upper()
        plural = request.resource.plural if request.resource is not None else None
        if method in WRITES and plural in OWNED:
            found.append(f"{method} {request.url.path}")
    return found


async def create(api: ApiServer, body: dict[str, Any]) -> dict[str, Any]:
    return api.create_object(FORECASTMODELS, copy.deepcopy(body))


def set_version(api: ApiServer, name: str, version: str, **model: Any) -> None:
    api.patch_object(FORECASTMODELS, NS, name, {"spec": {"model": {"version": version, **model}}})


async def serving(api: ApiServer, op: Operator, store: Store, name: str, **kwargs: Any) -> None:
    """Create `name` at version 1 and play the kubelet until blue serves it."""
    await create(api, forecast_model(name, store, **kwargs))
    await eventually(lambda: deployment(api, f"{name}-blue"), what=f"{name}-blue created")
    mark_deployment_available(api, NS, f"{name}-blue")
    await eventually(lambda: has_condition(api, name, "Ready", "True"), what=f"{name} Ready")
    await eventually(lambda: op.settled(name), what=f"{name} settled")


async def upgraded(api: ApiServer, name: str, version: str = "2") -> dict[str, Any]:
    """Ask for `version` and wait for the green preview Deployment that serves it."""
    set_version(api, name, version)

    def green() -> dict[str, Any] | None:
        found = deployment(api, f"{name}-green")
        return found if found and found["metadata"]["labels"][res.LABEL_VERSION] == version else None

    return await eventually(green, what=f"{name}-green at {version}")


# -- 1. first deploy ---------------------------------------------------------------------------------------


async def test_first_deploy(kube: ApiServer, operator: Operator, store: Store) -> None:
    created = await create(kube, forecast_model("demand", store))
    blue = await eventually(lambda: deployment(kube, "demand-blue"), what="demand-blue")

    owner = blue["metadata"]["ownerReferences"]
    assert owner == [
        {
            "apiVersion": "retailforecast.io/v1alpha1",
            "kind": "ForecastModel",
            "name": "demand",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert blue["metadata"]["labels"][res.LABEL_VERSION] == "1"
    assert blue["spec"]["template"]["metadata"]["labels"][res.LABEL_VERSION] == "1"
    assert blue["spec"]["replicas"] == 2
    pod = blue["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"] == [
        "fetch-model",
        store.uri,
        "demand",
        "1",
        "/models/current",
        "--sha256",
        store.sha["1"],
    ]
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert await eventually(lambda: selected_color(kube, "demand")) == "blue"
    svc = kube.read(SERVICES, NS, "demand")
    assert svc is not None
    assert svc["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    await eventually(lambda: has_condition(kube, "demand", "ModelVerified", "True"), what="ModelVerified")
    await eventually(lambda: has_condition(kube, "demand", "Progressing", "True"), what="Progressing")
    assert has_condition(kube, "demand", "Ready", "False")
    assert status(kube, "demand").get("activeVersion") is None

    mark_deployment_available(kube, NS, "demand-blue")
    await eventually(lambda: has_condition(kube, "demand", "Ready", "True"), what="Ready")
    final = status(kube, "demand")
    assert final["activeColor"] == "blue"
    assert final["activeVersion"] == "1"
    assert final["modelSha256"] == store.sha["1"]
    assert final["endpoint"] == "demand.default.svc"
    assert final["observedGeneration"] == fm(kube, "demand")["metadata"]["generation"]
    assert has_condition(kube, "demand", "Progressing", "False")
    assert hpa_target(kube, "demand") == "demand-blue"
    hpa = kube.read(HPAS, NS, "demand")
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    promoted = await eventually(lambda: events(kube, "demand", "Promoted"), what="Promoted event")
    assert promoted[0]["type"] == "Normal"
    assert promoted[0]["involvedObject"]["uid"] == created["metadata"]["uid"]
    assert events(kube, "demand", "RolloutStarted")
    assert not fm(kube, "demand")["metadata"].get("finalizers")


# -- 2. an unchanged resource costs reads only -------------------------------------------------------------


async def test_restart_with_nothing_to_do_writes_nothing(
    kube: ApiServer, operator: Operator, store: Store
) -> None:
    await serving(kube, operator, store, "demand")
    # Resources that cannot be served are steady too: their failure is reported once, not per look.
    invalid = forecast_model("invalid", store)
    invalid["spec"]["autoscaling"].update(minReplicas=5, maxReplicas=4)
    await create(kube, invalid)
    await create(kube, forecast_model("pinned", store, pin="0" * 64))
    await eventually(lambda: events(kube, "demand", "Promoted"), what="Promoted event")
    await eventually(lambda: events(kube, "invalid", "InvalidSpec"), what="InvalidSpec event")
    await eventually(lambda: events(kube, "pinned", "ModelVerificationFailed"), what="verification event")
    await operator.stop()
    assert len(events(kube, "invalid")) == 1
    assert len(events(kube, "pinned")) == 1

    before_rv = kube.resource_version
    before_requests = len(list(kube))
    operator.calls.clear()
    operator.emitted.clear()
    await operator.start()
    # A fresh operator lists the ForecastModels and the Deployment: "demand" is reconciled twice.
    await eventually(
        lambda: (
            len(operator.calls_for("demand")) >= 2
            and operator.calls_for("invalid")
            and operator.calls_for("pinned")
        ),
        what="every resource reconciled after the restart",
    )
    await operator.stop()

    assert all(call.error is None for call in operator.calls)
    assert writes_since(kube, before_requests) == []
    assert operator.emitted == []
    assert kube.resource_version == before_rv


async def test_autoscaler_owns_the_replicas(kube: ApiServer, operator: Operator, store: Store) -> None:
    """The HPA scales the active colour; the operator neither resets nor rewrites the count."""
    await serving(kube, operator, store, "demand")
    before_requests = len(list(kube))
    before_calls = len(operator.calls_for("demand"))
    # Play the HPA controller (it writes the scale subresource; the emulator takes the main resource).
    kube.patch_object(DEPLOYMENTS, NS, "demand-blue", {"spec": {"replicas": 3}})
    mark_deployment_available(kube, NS, "demand-blue")
    await eventually(lambda: len(operator.calls_for("demand")) >= before_calls + 2, what="two reconciles")
    blue = deployment(kube, "demand-blue")
    assert blue is not None
    assert blue["spec"]["replicas"] == 3
    assert writes_since(kube, before_requests) == []

    # A template change (a new image) is rolled into the active colour without touching its replicas.
    kube.patch_object(
        FORECASTMODELS, NS, "demand", {"spec": {"serving": {"image": "registry.local/inference:2"}}}
    )

    def new_image() -> bool:
        found = deployment(kube, "demand-blue")
        return found is not None and found["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
            ":2"
        )

    await eventually(new_image, what="the new image on demand-blue")
    blue = deployment(kube, "demand-blue")
    assert blue is not None
    assert blue["spec"]["replicas"] == 3


# -- 3. upgrade --------------------------------------------------------------------------------------------


async def test_upgrade(kube: ApiServer, operator: Operator, store: Store) -> None:
    await serving(kube, operator, store, "demand")
    green = await upgraded(kube, "demand")

    assert green["spec"]["template"]["spec"]["initContainers"][0]["args"][3] == "2"
    assert green["metadata"]["ownerReferences"][0]["name"] == "demand"
    assert await eventually(lambda: selected_color(kube, "demand-preview") == "green", what="preview")
    assert selected_color(kube, "demand") == "blue"
    await eventually(lambda: status(kube, "demand").get("previewVersion") == "2", what="previewVersion")
    assert status(kube, "demand")["activeVersion"] == "1"
    assert hpa_target(kube, "demand") == "demand-blue"

    mark_deployment_available(kube, NS, "demand-green")
    await eventually(lambda: selected_color(kube, "demand") == "green", what="Service demand → green")
    await eventually(lambda: hpa_target(kube, "demand") == "demand-green", what="HPA → green")
    await eventually(lambda: status(kube, "demand").get("activeVersion") == "2", what="activeVersion 2")
    assert status(kube, "demand")["activeColor"] == "green"
    assert status(kube, "demand").get("previewVersion") is None

    # scaleDownDelaySeconds: 1, passed without any watch event: the operator's own scheduled reconcile.
    def blue_replicas() -> bool:
        blue = deployment(kube, "demand-blue")
        return blue is not None and blue["spec"]["replicas"] == 0

    await eventually(blue_replicas, what="demand-blue scaled to zero")
    green_now = deployment(kube, "demand-green")
    assert green_now is not None
    assert green_now["spec"]["replicas"] == 2
    assert has_condition(kube, "demand", "Ready", "True")


# -- 4. rollback to the retained colour --------------------------------------------------------------------


async def test_rollback_to_the_retained_colour(kube: ApiServer, operator: Operator, store: Store) -> None:
    await serving(kube, operator, store, "rb", scale_down_delay=3600)
    await upgraded(kube, "rb")
    mark_deployment_available(kube, NS, "rb-green")
    await eventually(lambda: status(kube, "rb").get("activeVersion") == "2", what="2 promoted")
    await eventually(lambda: len(events(kube, "rb", "Promoted")) == 2, what="second Promoted event")
    blue = deployment(kube, "rb-blue")
    assert blue is not None
    assert blue["spec"]["replicas"] == 2  # retained for an hour
    started = len(events(kube, "rb", "RolloutStarted"))

    set_version(kube, "rb", "1")
    await eventually(lambda: selected_color(kube, "rb") == "blue", what="Service rb → blue")
    await eventually(lambda: status(kube, "rb").get("activeVersion") == "1", what="activeVersion 1")
    await eventually(lambda: len(events(kube, "rb", "Promoted")) == 3, what="rollback Promoted event")
    await eventually(lambda: hpa_target(kube, "rb") == "rb-blue", what="HPA → blue")
    assert status(kube, "rb")["activeColor"] == "blue"
    assert status(kube, "rb").get("previewVersion") is None
    assert len(events(kube, "rb", "RolloutStarted")) == started
    blue_after = deployment(kube, "rb-blue")
    assert blue_after is not None
    assert blue_after["metadata"]["resourceVersion"] == blue["metadata"]["resourceVersion"]
    assert sorted(d["metadata"]["name"] for d in kube.list_objects(DEPLOYMENTS, NS)) == [
        "rb-blue",
        "rb-green",
    ]
    green = deployment(kube, "rb-green")
    assert green is not None
    assert green["spec"]["replicas"] == 2  # now the retained colour


# -- 5. failed upgrade: the progress deadline --------------------------------------------------------------


async def test_failed_upgrade_rolls_back(kube: ApiServer, operator: Operator, store: Store) -> None:
    # "stuck": the Deployment controller reports ProgressDeadlineExceeded. "slow": nothing is reported,
    # and the operator's own 10 s deadline (a scheduled reconcile, no watch event) expires.
    await serving(kube, operator, store, "stuck")
    await serving(kube, operator, store, "slow")
    blue = {name: deployment(kube, f"{name}-blue") for name in ("stuck", "slow")}
    await upgraded(kube, "slow")
    await upgraded(kube, "stuck")
    mark_deployment_stuck(kube, NS, "stuck-green")

    for name in ("stuck", "slow"):

        def green_scaled_down(name: str = name) -> bool:
            green = deployment(kube, f"{name}-green")
            return green is not None and green["spec"]["replicas"] == 0

        await eventually(green_scaled_down, timeout=25, what=f"{name}-green scaled to zero")
        await eventually(
            partial(has_condition, kube, name, "Degraded", "True", "ProgressDeadlineExceeded"),
            what=f"{name} Degraded",
        )
        rolled_back = await eventually(partial(events, kube, name, "RolledBack"), what="RolledBack")
        assert rolled_back[0]["type"] == "Warning"
        assert selected_color(kube, name) == "blue"
        assert hpa_target(kube, name) == f"{name}-blue"
        current = status(kube, name)
        assert (current["activeColor"], current["activeVersion"]) == ("blue", "1")
        assert current.get("previewVersion") is None
        assert has_condition(kube, name, "Ready", "True")
        after = deployment(kube, f"{name}-blue")
        before = blue[name]
        assert after is not None
        assert before is not None
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    # The failed version is not retried on its own; a new spec (back to 1) clears Degraded.
    set_version(kube, "stuck", "1")
    await eventually(lambda: has_condition(kube, "stuck", "Degraded", "False"), what="Degraded cleared")
    assert selected_color(kube, "stuck") == "blue"


# -- 6. the model does not verify --------------------------------------------------------------------------


async def test_bad_digest_and_missing_version(kube: ApiServer, operator: Operator, store: Store) -> None:
    await create(kube, forecast_model("pinned", store, pin="0" * 64))
    await create(kube, forecast_model("missing", store, version="9"))
    for name in ("pinned", "missing"):
        await eventually(
            partial(has_condition, kube, name, "ModelVerified", "False", "ModelVerificationFailed"),
            what=f"{name} ModelVerified=False",
        )
        warning = await eventually(
            partial(events, kube, name, "ModelVerificationFailed"), what=f"{name} warning"
        )
        assert warning[0]["type"] == "Warning"
    assert "0" * 64 in condition(kube, "pinned", "ModelVerified")["message"]
    assert "demand/9" in condition(kube, "missing", "ModelVerified")["message"]

    # With a version serving, a bad pin changes nothing that serves.
    await serving(kube, operator, store, "demand")
    blue = deployment(kube, "demand-blue")
    assert blue is not None
    set_version(kube, "demand", "2", sha256="f" * 64)
    await eventually(
        lambda: has_condition(kube, "demand", "ModelVerified", "False", "ModelVerificationFailed"),
        what="demand ModelVerified=False",
    )
    set_version(kube, "demand", "9", sha256=None)
    await eventually(lambda: "demand/9" in condition(kube, "demand", "ModelVerified").get("message", ""))
    assert selected_color(kube, "demand") == "blue"
    assert (status(kube, "demand")["activeColor"], status(kube, "demand")["activeVersion"]) == ("blue", "1")
    assert deployment(kube, "demand-green") is None
    after = deployment(kube, "demand-blue")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == blue["metadata"]["resourceVersion"]

    assert owned(kube, "pinned") == []
    assert owned(kube, "missing") == []
    assert operator.running


# -- 7. restart mid-rollout --------------------------------------------------------------------------------


async def test_restart_mid_rollout(kube: ApiServer, operator: Operator, store: Store) -> None:
    await serving(kube, operator, store, "demand")
    await upgraded(kube, "demand")
    await eventually(lambda: status(kube, "demand").get("previewVersion") == "2", what="previewVersion")
    await operator.stop()

    mark_deployment_available(kube, NS, "demand-green")  # while no operator runs
    assert selected_color(kube, "demand") == "blue"

    await operator.start()
    await eventually(lambda: selected_color(kube, "demand") == "green", what="Service demand → green")
    await eventually(lambda: status(kube, "demand").get("activeVersion") == "2", what="activeVersion 2")
    assert status(kube, "demand")["activeColor"] == "green"
    await eventually(lambda: hpa_target(kube, "demand") == "demand-green", what="HPA → green")
    assert len(events(kube, "demand", "RolloutStarted")) == 2  # one per version: none repeated by the restart


# -- 8. delete ---------------------------------------------------------------------------------------------


async def test_delete_leaves_cleanup_to_the_garbage_collector(
    kube: ApiServer, operator: Operator, store: Store
) -> None:
    await serving(kube, operator, store, "demand")
    assert len(owned(kube, "demand")) == 4  # blue, demand, demand-preview, HPA
    before = len(operator.calls_for("demand"))

    deleted = kube.delete_object(FORECASTMODELS, NS, "demand")
    assert not deleted["metadata"].get("deletionTimestamp")  # no finalizer: gone at once
    assert kube.read(FORECASTMODELS, NS, "demand") is None
    assert owned(kube, "demand") == []  # the ownerReference cascade
    # The Deployment's DELETED event makes the operator look once more: it must find nothing to do.
    await eventually(lambda: len(operator.calls_for("demand")) > before, what="a reconcile after delete")
    requests = len(list(kube))
    assert owned(kube, "demand") == []
    assert operator.running
    assert all(call.error is None for call in operator.calls)

    history = kube.objects[FORECASTMODELS, NS, "demand"].history
    versions = [version.raw for version in history if version is not None]
    assert versions
    assert all(not version["metadata"].get("finalizers") for version in versions)

    # The same name again is a new resource: served from scratch.
    await create(kube, forecast_model("demand", store))
    await eventually(lambda: deployment(kube, "demand-blue"), what="a new demand-blue")
    assert writes_since(kube, requests)


# -- 9. invalid specs --------------------------------------------------------------------------------------


async def test_invalid_specs(kube: ApiServer, operator: Operator, store: Store) -> None:
    ordered = forecast_model("ordered", store)
    ordered["spec"]["autoscaling"].update(minReplicas=5, maxReplicas=4)
    unknown = forecast_model("unknown", store)
    unknown["spec"]["serving"]["imagePullPolicyy"] = "Always"
    no_model = forecast_model("no-model", store)
    del no_model["spec"]["model"]
    for body in (ordered, unknown, no_model):
        await create(kube, body)

    for name in ("ordered", "unknown", "no-model"):
        await eventually(
            partial(has_condition, kube, name, "ModelVerified", "False", "InvalidSpec"),
            what=f"{name} InvalidSpec",
        )
        warning = await eventually(partial(events, kube, name, "InvalidSpec"), what=f"{name} warning")
        assert warning[0]["type"] == "Warning"
        assert owned(kube, name) == []
    assert "minReplicas" in condition(kube, "ordered", "ModelVerified")["message"]
    assert "imagePullPolicyy" in condition(kube, "unknown", "ModelVerified")["message"]
    assert "model" in condition(kube, "no-model", "ModelVerified")["message"]
    assert operator.running

    # Fixing the spec serves it.
    kube.patch_object(FORECASTMODELS, NS, "ordered", {"spec": {"autoscaling": {"minReplicas": 2}}})
    await eventually(lambda: deployment(kube, "ordered-blue"), what="ordered-blue after the fix")
    await eventually(lambda: has_condition(kube, "ordered", "ModelVerified", "True"), what="verified")


# -- 10. the model store is down ---------------------------------------------------------------------------


async def test_store_outage_is_retried(
    kube: ApiServer, operator: Operator, store: Store, azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="retail_forecast.operator")
    azurite.stop()
    try:
        await create(kube, forecast_model("demand", store))
        await eventually(
            lambda: any(call.error is not None for call in operator.calls_for("demand")),
            timeout=30,
            what="a failed reconcile while the store is down",
        )
        assert owned(kube, "demand") == []
        assert not condition(kube, "demand", "ModelVerified")  # unknown, not failed: nothing was verified
        assert not events(kube, "demand")
        assert operator.running
        await eventually(
            lambda: any("will retry default/demand" in r.getMessage() for r in caplog.records),
            what="a retry is scheduled",
        )
    finally:
        azurite.start()
    await eventually(lambda: deployment(kube, "demand-blue"), timeout=30, what="demand-blue after the outage")
    await eventually(lambda: has_condition(kube, "demand", "ModelVerified", "True"), what="verified")


async def test_store_refusing_access_is_retried(
    kube: ApiServer, operator: Operator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an outage but an error answer (403: the wrong key): retried too, never dropped."""
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        store.connection_string.replace("AccountKey=Eby8", "AccountKey=AAAA"),
    )
    await create(kube, forecast_model("demand", store))
    await eventually(
        lambda: any(call.error is not None for call in operator.calls_for("demand")),
        what="a failed reconcile while the store refuses access",
    )
    assert owned(kube, "demand") == []
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", store.connection_string)
    await eventually(lambda: deployment(kube, "demand-blue"), what="demand-blue once access works")


# -- 11. a concurrent writer -------------------------------------------------------------------------------


async def test_status_conflict_is_retried_with_a_fresh_read(
    kube: ApiServer, operator: Operator, store: Store
) -> None:
    raced: list[str] = []

    def race(request: Any) -> bool:
        """On the operator's first status write, someone else writes the resource first (a real 409)."""
        if (
            not raced
            and str(request.method.value).upper() == "PATCH"
            and request.resource is not None
            and request.resource.plural == "forecastmodels"
            and request.subresource == "status"
        ):
            raced.append(request.url.path)
            kube.patch_object(FORECASTMODELS, NS, request.name, {"metadata": {"labels": {"touched": "yes"}}})
        return False  # never answer ourselves: the emulator serves the request, now with a stale version

    kube[race] << 500  # never matches (the criterion is False); it only observes and races
    await serving(kube, operator, store, "demand")

    assert raced
    assert fm(kube, "demand")["metadata"]["labels"] == {"touched": "yes"}
    final = status(kube, "demand")
    assert (final["activeColor"], final["activeVersion"]) == ("blue", "1")
    assert has_condition(kube, "demand", "ModelVerified", "True")
    assert all(call.error is None for call in operator.calls)
    assert len(events(kube, "demand", "RolloutStarted")) == 1

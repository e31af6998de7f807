"""The API emulator behaves like a Kubernetes API server where the operator depends on it (over real HTTP)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest
import pytest_asyncio

from tests.operator.kube import ApiServer, mark_deployment_available, mark_deployment_stuck

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

NS = "shop"
FM = "/apis/retailforecast.io/v1alpha1/namespaces/shop/forecastmodels"
DEPLOY = "/apis/apps/v1/namespaces/shop/deployments"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}


@pytest_asyncio.fixture
async def http(kube: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=str(kube.url), timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


def fm(name: str, version: str = "1", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "retailforecast.io/v1alpha1",
        "kind": "ForecastModel",
        "metadata": {"name": name, **meta},
        "spec": {"model": {"name": "demand", "version": version}},
    }


async def call(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with http.request(method, path, json=body, headers=headers) as rsp:
        return rsp.status, await rsp.json()


async def create(http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, obj = await call(http, "POST", path, body)
    assert status == 201, obj
    assert isinstance(obj, dict)
    return obj


async def read_events(rsp: aiohttp.ClientResponse, count: int) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the next `count` events of a watch stream, bounded in time."""
    events: list[tuple[str, str, str]] = []
    async with asyncio.timeout(10):
        while len(events) < count:
            line = await rsp.content.readline()
            assert line, f"the stream ended after {events}"
            event = json.loads(line)
            meta = event["object"]["metadata"]
            events.append((event["type"], meta.get("name", ""), meta["resourceVersion"]))
    return events


async def test_create_sets_server_metadata(http: aiohttp.ClientSession) -> None:
    obj = await create(http, FM, fm("a"))
    meta = obj["metadata"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["generation"] == 1
    assert meta["namespace"] == NS
    assert isinstance(meta["resourceVersion"], str)
    other = await create(http, FM, fm("b"))
    assert int(other["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert other["metadata"]["uid"] != meta["uid"]
    status, fetched = await call(http, "GET", f"{FM}/a")
    assert status == 200
    assert fetched == obj


async def test_generation_bumps_only_on_spec_changes(http: aiohttp.ClientSession) -> None:
    obj = await create(http, FM, fm("a"))
    rv0 = int(obj["metadata"]["resourceVersion"])

    _, obj = await call(http, "PATCH", f"{FM}/a", {"metadata": {"labels": {"x": "y"}}}, MERGE)
    assert obj["metadata"]["generation"] == 1
    rv1 = int(obj["metadata"]["resourceVersion"])
    assert rv1 > rv0

    _, obj = await call(http, "PATCH", f"{FM}/a/status", {"status": {"phase": "x"}}, MERGE)
    assert obj["metadata"]["generation"] == 1
    rv2 = int(obj["metadata"]["resourceVersion"])
    assert rv2 > rv1

    _, obj = await call(http, "PATCH", f"{FM}/a", {"spec": {"model": {"version": "2"}}}, MERGE)
    assert obj["metadata"]["generation"] == 2
    assert obj["spec"]["model"] == {"name": "demand", "version": "2"}
    assert int(obj["metadata"]["resourceVersion"]) > rv2

    # A no-op write changes nothing: no new resourceVersion.
    _, same = await call(http, "PATCH", f"{FM}/a", {"spec": {"model": {"version": "2"}}}, MERGE)
    assert same == obj

    # Server-owned metadata cannot be overwritten by clients.
    patch = {"metadata": {"uid": "x", "generation": 99, "creationTimestamp": "2000-01-01T00:00:00Z"}}
    _, after = await call(http, "PATCH", f"{FM}/a", patch, MERGE)
    assert after["metadata"] == obj["metadata"]


async def test_stale_resource_version_is_a_conflict(http: aiohttp.ClientSession) -> None:
    obj = await create(http, FM, fm("a"))
    rv = obj["metadata"]["resourceVersion"]
    status, obj = await call(
        http, "PATCH", f"{FM}/a", {"metadata": {"resourceVersion": rv}, "spec": {"v": 1}}, MERGE
    )
    assert status == 200
    status, err = await call(
        http, "PATCH", f"{FM}/a", {"metadata": {"resourceVersion": rv}, "spec": {"v": 2}}, MERGE
    )
    assert status == 409
    assert err["kind"] == "Status"
    assert err["reason"] == "Conflict"
    assert err["code"] == 409

    stale = dict(obj, metadata=dict(obj["metadata"], resourceVersion=rv), spec={"v": 3})
    status, err = await call(http, "PUT", f"{FM}/a", stale)
    assert (status, err["reason"]) == (409, "Conflict")
    fresh = dict(obj, spec={"v": 3})
    status, replaced = await call(http, "PUT", f"{FM}/a", fresh)
    assert status == 200
    assert replaced["spec"] == {"v": 3}
    assert replaced["metadata"]["generation"] == 3


async def test_failed_json_patch_test_is_unprocessable(http: aiohttp.ClientSession) -> None:
    obj = await create(http, FM, fm("a", finalizers=["a/b"]))
    rv = obj["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    status, err = await call(http, "PATCH", f"{FM}/a", ops, JSONPATCH)
    assert status == 422
    assert (err["kind"], err["reason"], err["code"]) == ("Status", "Invalid", 422)

    ops[0]["value"] = rv
    status, obj = await call(http, "PATCH", f"{FM}/a", ops, JSONPATCH)
    assert status == 200
    assert obj["metadata"]["finalizers"] == []

    status, err = await call(
        http, "PATCH", f"{FM}/a", {"spec": {}}, {"Content-Type": "application/apply-patch+yaml"}
    )
    assert status == 415


async def test_create_answers_201_and_conflicts_on_existing_names(http: aiohttp.ClientSession) -> None:
    await create(http, FM, fm("a"))
    status, err = await call(http, "POST", FM, fm("a"))
    assert status == 409
    assert (err["kind"], err["reason"], err["code"]) == ("Status", "AlreadyExists", 409)


async def test_generate_name(http: aiohttp.ClientSession) -> None:
    body = fm("x")
    body["metadata"] = {"generateName": "demand-"}
    names = {(await create(http, FM, body))["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3
    assert all(re.fullmatch(r"demand-[a-z0-9]{5}", name) for name in names)


async def test_status_subresource_is_isolated(http: aiohttp.ClientSession) -> None:
    obj = await create(http, FM, dict(fm("a"), status={"sneaky": True}))
    assert "status" not in obj  # ignored on create

    _, obj = await call(http, "PATCH", f"{FM}/a", {"spec": {"v": 1}, "status": {"phase": "main"}}, MERGE)
    assert obj["spec"]["v"] == 1
    assert "status" not in obj

    _, obj = await call(
        http, "PATCH", f"{FM}/a/status", {"spec": {"v": 2}, "status": {"phase": "sub"}}, MERGE
    )
    assert obj["spec"]["v"] == 1
    assert obj["status"] == {"phase": "sub"}

    ops = [
        {"op": "add", "path": "/status/observedGeneration", "value": 2},
        {"op": "replace", "path": "/spec/v", "value": 9},
    ]
    status, obj = await call(http, "PATCH", f"{FM}/a/status", ops, JSONPATCH)
    assert status == 200
    assert obj["status"] == {"phase": "sub", "observedGeneration": 2}
    assert obj["spec"]["v"] == 1

    status, obj = await call(http, "PUT", f"{FM}/a", dict(obj, status={"phase": "put"}))
    assert status == 200
    assert obj["status"] == {"phase": "sub", "observedGeneration": 2}

    # Built-in kinds with a status subresource too; strategic-merge is accepted (as a merge).
    deploy = {"metadata": {"name": "d"}, "spec": {"replicas": 2}, "status": {"readyReplicas": 2}}
    obj = await create(http, DEPLOY, deploy)
    assert "status" not in obj
    smp = {"Content-Type": "application/strategic-merge-patch+json"}
    _, obj = await call(
        http, "PATCH", f"{DEPLOY}/d", {"spec": {"replicas": 3}, "status": {"readyReplicas": 3}}, smp
    )
    assert (obj["spec"]["replicas"], "status" in obj) == (3, False)


async def test_list_carries_resource_version_and_filters_by_labels(
    http: aiohttp.ClientSession, kube: ApiServer
) -> None:
    await create(http, FM, fm("a", labels={"app": "x", "color": "blue"}))
    await create(http, FM, fm("b", labels={"app": "x", "color": "green"}))
    await create(http, FM, fm("c", labels={"app": "y"}))

    async def names(selector: str) -> list[str]:
        async with http.get(FM, params={"labelSelector": selector}) as rsp:
            body = await rsp.json()
        assert body["metadata"]["resourceVersion"] == kube.resource_version
        assert body["kind"] == "ForecastModelList"
        return sorted(item["metadata"]["name"] for item in body["items"])

    assert await names("") == ["a", "b", "c"]
    assert await names("app=x") == ["a", "b"]
    assert await names("app==x,color!=blue") == ["b"]
    assert await names("color") == ["a", "b"]
    assert await names("!color") == ["c"]
    assert await names("color in (green, red)") == ["b"]
    assert await names("app=x,color notin (green)") == ["a"]
    assert [
        o["metadata"]["name"]
        for o in kube.list_objects("retailforecast.io/v1alpha1/forecastmodels", NS, "app=y")
    ] == ["c"]
    async with http.get(FM, params={"fieldSelector": "metadata.name=b"}) as rsp:
        assert [i["metadata"]["name"] for i in (await rsp.json())["items"]] == ["b"]


async def test_watch_from_resource_version_streams_only_later_events(http: aiohttp.ClientSession) -> None:
    await create(http, FM, fm("old"))
    async with http.get(FM) as rsp:
        listed_rv = (await rsp.json())["metadata"]["resourceVersion"]

    # Changes between the list and the watch are not lost: they are replayed from history.
    a = await create(http, FM, fm("a"))
    async with http.get(FM, params={"watch": "true", "resourceVersion": listed_rv}) as rsp:
        assert rsp.status == 200
        _, b = await call(http, "PATCH", f"{FM}/a", {"spec": {"v": 2}}, MERGE)
        await call(http, "DELETE", f"{FM}/a")
        events = await read_events(rsp, 3)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert events[0][2] == a["metadata"]["resourceVersion"]
    assert events[1][2] == b["metadata"]["resourceVersion"]
    assert int(events[2][2]) > int(events[1][2])

    # Without a resourceVersion: the existing objects as ADDED, then live events.
    async with http.get(FM, params={"watch": "true"}) as rsp:
        assert [(t, n) for t, n, _ in await read_events(rsp, 1)] == [("ADDED", "old")]
        await call(http, "PATCH", f"{FM}/old", {"spec": {"v": 1}}, MERGE)
        assert [(t, n) for t, n, _ in await read_events(rsp, 1)] == [("MODIFIED", "old")]


async def test_no_event_is_lost_between_list_and_watch_under_concurrent_writes(
    http: aiohttp.ClientSession,
) -> None:
    writes = 60

    async def writer() -> None:
        for i in range(writes):
            await create(http, FM, fm(f"o{i}"))

    task = asyncio.create_task(writer())
    try:
        async with asyncio.timeout(20):
            while True:  # list somewhere in the middle of the writes
                async with http.get(FM) as rsp:
                    listing = await rsp.json()
                if len(listing["items"]) >= writes // 3:
                    break
            seen = {item["metadata"]["name"] for item in listing["items"]}
            params = {"watch": "true", "resourceVersion": listing["metadata"]["resourceVersion"]}
            async with http.get(FM, params=params) as rsp:
                events = await read_events(rsp, writes - len(seen))
    finally:
        await task
    assert all(t == "ADDED" for t, _, _ in events)
    assert seen.isdisjoint(n for _, n, _ in events)
    assert seen | {n for _, n, _ in events} == {f"o{i}" for i in range(writes)}


async def test_watch_with_label_selector(http: aiohttp.ClientSession) -> None:
    await create(http, FM, fm("x", labels={"app": "other"}))
    async with http.get(FM, params={"watch": "true", "labelSelector": "app=mine"}) as rsp:
        await create(http, FM, fm("y", labels={"app": "other"}))
        await create(http, FM, fm("a", labels={"app": "mine"}))
        await call(
            http, "PATCH", f"{FM}/x", {"metadata": {"labels": {"app": "mine"}}}, MERGE
        )  # starts matching
        await call(
            http, "PATCH", f"{FM}/a", {"metadata": {"labels": {"app": "gone"}}}, MERGE
        )  # stops matching
        events = await read_events(rsp, 3)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "a"), ("ADDED", "x"), ("DELETED", "a")]


async def test_deletion_waits_for_finalizers(http: aiohttp.ClientSession) -> None:
    await create(http, FM, fm("a", finalizers=["retailforecast.io/cleanup"]))
    async with http.get(FM, params={"watch": "true", "resourceVersion": "1"}) as rsp:
        status, obj = await call(http, "DELETE", f"{FM}/a")
        assert status == 200
        assert obj["metadata"]["deletionTimestamp"]
        status, still = await call(http, "GET", f"{FM}/a")
        assert status == 200
        assert still["metadata"]["deletionTimestamp"] == obj["metadata"]["deletionTimestamp"]

        status, err = await call(http, "PATCH", f"{FM}/a", {"metadata": {"finalizers": ["x", "y"]}}, MERGE)
        assert status == 422  # no new finalizers while deleting

        status, _ = await call(http, "PATCH", f"{FM}/a", {"metadata": {"finalizers": None}}, MERGE)
        assert status == 200
        events = await read_events(rsp, 4)
    assert [t for t, _, _ in events] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    status, err = await call(http, "GET", f"{FM}/a")
    assert (status, err["reason"]) == (404, "NotFound")
    status, err = await call(http, "DELETE", f"{FM}/a")
    assert status == 404


async def test_owner_reference_cascade(http: aiohttp.ClientSession, kube: ApiServer) -> None:
    owner = await create(http, FM, fm("owner"))
    ref = {
        "apiVersion": "retailforecast.io/v1alpha1",
        "kind": "ForecastModel",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    other = await create(http, FM, fm("other"))
    ref2 = dict(ref, name="other", uid=other["metadata"]["uid"], controller=False)
    deploy = await create(
        http, DEPLOY, {"metadata": {"name": "owner-blue", "ownerReferences": [ref]}, "spec": {}}
    )
    rs_ref = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "owner-blue",
        "uid": deploy["metadata"]["uid"],
    }
    await create(
        http,
        "/apis/apps/v1/namespaces/shop/replicasets",
        {"metadata": {"name": "rs", "ownerReferences": [rs_ref]}},
    )
    await create(
        http,
        "/api/v1/namespaces/shop/services",
        {"metadata": {"name": "owner", "ownerReferences": [ref, ref2]}},
    )
    await create(
        http, "/api/v1/namespaces/shop/services", {"metadata": {"name": "orphan", "ownerReferences": [ref2]}}
    )

    status, _ = await call(http, "DELETE", f"{FM}/owner")
    assert status == 200
    assert kube.read("apps/v1/deployments", NS, "owner-blue") is None
    assert kube.read("apps/v1/replicasets", NS, "rs") is None  # recursively
    shared = kube.read("v1/services", NS, "owner")
    assert shared is not None  # another owner is alive: only the dangling reference goes
    assert shared["metadata"]["ownerReferences"] == [ref2]

    status, _ = await call(http, "DELETE", f"{FM}/other", {"propagationPolicy": "Orphan"})
    assert status == 200
    orphan = kube.read("v1/services", NS, "orphan")
    assert orphan is not None
    assert orphan["metadata"]["ownerReferences"] == []


async def test_deployment_controller_helpers(kube: ApiServer, http: aiohttp.ClientSession) -> None:
    await create(http, DEPLOY, {"metadata": {"name": "d"}, "spec": {"replicas": 3}})
    await call(http, "PATCH", f"{DEPLOY}/d", {"spec": {"replicas": 2}}, MERGE)
    obj = mark_deployment_available(kube, NS, "d")
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["observedGeneration"] == 2
    assert obj["status"]["availableReplicas"] == obj["status"]["readyReplicas"] == 2
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    assert conditions["Available"]["status"] == "True"

    obj = mark_deployment_stuck(kube, NS, "d")
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    assert (conditions["Progressing"]["status"], conditions["Progressing"]["reason"]) == (
        "False",
        "ProgressDeadlineExceeded",
    )
    assert "availableReplicas" not in obj["status"]
    status, fetched = await call(http, "GET", f"{DEPLOY}/d")
    assert (status, fetched) == (200, obj)


async def test_kopf_operator_runs_a_handler_once(kube: ApiServer, http: aiohttp.ClientSession) -> None:
    registry = kopf.OperatorRegistry()
    calls: list[str] = []
    url = str(kube.url)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    @kopf.on.create("retailforecast.io", "v1alpha1", "forecastmodels", id="created", registry=registry)
    def created(name: str, **_: Any) -> dict[str, str]:
        calls.append(name)
        return {"message": f"hello {name}"}

    # kopf serves a namespace only once it sees the Namespace object, as on a real cluster.
    await create(http, "/api/v1/namespaces", {"metadata": {"name": NS}})
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 5
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            namespaces=[NS],
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    try:
        async with asyncio.timeout(30):
            await ready.wait()
            await create(http, FM, fm("demo"))
            while True:
                obj = kube.read("retailforecast.io/v1alpha1/forecastmodels", NS, "demo")
                assert obj is not None
                annotations = obj["metadata"].get("annotations", {})
                done = obj.get("status", {}).get("created") and not any(
                    key.startswith("kopf.zalando.org/created") for key in annotations
                )
                if done:
                    break
                await asyncio.sleep(0.05)
            # Let kopf see its own patches come back, then check nothing ran twice.
            await create(http, FM, fm("second"))
            while "second" not in calls:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert calls == ["demo", "second"]
    assert obj["status"]["created"] == {"message": "hello demo"}
    assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]


async def test_namespaces_are_served(http: aiohttp.ClientSession) -> None:
    # kmock 0.8's own path parser fails on these cluster-scoped URLs; the emulator parses them itself.
    await create(http, "/api/v1/namespaces", {"metadata": {"name": NS}})
    status, obj = await call(http, "GET", f"/api/v1/namespaces/{NS}")
    assert (status, obj["kind"], obj["metadata"]["name"]) == (200, "Namespace", NS)
    async with http.get("/api/v1/namespaces") as rsp:
        names = {item["metadata"]["name"] for item in (await rsp.json())["items"]}
    assert names == {"default", NS}
    await create(http, f"/api/v1/namespaces/{NS}/services", {"metadata": {"name": "svc"}})
    status, obj = await call(http, "GET", f"/api/v1/namespaces/{NS}/services/svc")
    assert (status, obj["metadata"]["namespace"]) == (200, NS)

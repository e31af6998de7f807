"""A Kubernetes API server for the operator's integration tests: kmock's emulator, made honest.

Stock ``kmock.KubernetesEmulator`` (0.8) stores objects and serves discovery, but it is not an API
server: no uid/resourceVersion/generation, POST answers 200, a failed JSON-patch ``test`` is a 500,
watches replay everything as ADDED and ignore ``resourceVersion``, no selectors, no status subresource.
kopf misbehaves against that. ``ApiServer`` keeps kmock's HTTP server, discovery, DSL (a test can still
inject a reaction with ``api["patch", ...] << 500``) and its ``objects`` store with per-object history,
and replaces the object endpoints with the documented API semantics the operator relies on:

* metadata: ``uid``, ``creationTimestamp``, ``resourceVersion`` (one global counter, a string),
  ``generation`` (bumped only when ``spec`` changes, or — for kinds without spec — anything outside
  metadata/status; also when deletion is requested on an object with finalizers, as the real server does);
  a no-op write changes nothing and emits no event;
* POST → 201, an existing name → 409 AlreadyExists, ``metadata.generateName`` → prefix + 5 characters;
* PATCH (``merge-patch+json``, ``json-patch+json``; ``strategic-merge-patch+json`` is applied as a
  plain JSON merge patch — no list merge keys, no ``$patch`` directives — which is exact for everything
  the operator sends but not for list fields with merge keys such as containers); ``apply-patch+yaml``
  (server-side apply) and other types → 415. PUT replaces. ``metadata.resourceVersion`` in the body that
  differs from the stored one → 409 Conflict; a failing JSON-patch op (``test`` included) → 422 Invalid;
* the ``status`` subresource where declared (CRDs with ``subresources.status``, Deployments, HPAs):
  the main endpoint ignores ``.status``, ``/status`` changes only ``.status`` and never the generation;
* list: ``metadata.resourceVersion`` is the current global version; ``labelSelector`` (``a=b``, ``a==b``,
  ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``) and ``fieldSelector`` (``metadata.name``,
  ``metadata.namespace``; ``=``/``==``/``!=``) on list, watch and delete-collection;
* watch: subscribes before it snapshots; with ``resourceVersion=N`` (N > 0) it streams only events
  after N (a version older than the kept history gets an ERROR 410 Gone, as from a real server);
  without it (or with ``0``) it starts with ADDED for the existing objects; with a selector, an object
  that starts/stops matching arrives as ADDED/DELETED (as from the real watch cache);
  ``sendInitialEvents=true`` ends the initial ADDED events with the ``k8s.io/initial-events-end``
  BOOKMARK; ``timeoutSeconds`` ends the stream;
* DELETE: returns the object; with finalizers it only sets ``deletionTimestamp`` (MODIFIED) and the
  object goes away (DELETED) when the last finalizer is removed; ``preconditions`` are honoured;
  background garbage collection by ``ownerReferences`` (recursively; an object with another live owner
  only loses the dangling reference); ``propagationPolicy=Orphan`` strips the references instead;
  ``Foreground`` is treated as ``Background``;
* creating a CRD registers its resource for discovery and the object endpoints.

Not emulated (the tests play these parts explicitly): controllers (a Deployment never becomes
Available by itself — see :func:`mark_deployment_available`), schema validation and defaulting (except
``Deployment.spec.replicas`` → 1), admission, namespaces' existence and their deletion, pagination
(``limit`` is ignored: everything comes in one page), ``dryRun``, server-side apply, bookmarks other than
the initial-events one, managedFields.

Mutations run synchronously inside one request handler, so they are atomic with respect to each other
and to watch subscription in the single-threaded event loop; no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import json
import random
import re
import string
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import apps, enums, parsing, rendering

Obj = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

CRDS = kmock.resource("apiextensions.k8s.io/v1/customresourcedefinitions")
DEPLOYMENTS = kmock.resource("apps/v1/deployments")
FORECASTMODELS = kmock.resource("retailforecast.io/v1alpha1/forecastmodels")

# group/version/plural → (kind, namespaced, short names, subresources)
BUILTIN_RESOURCES: dict[str, tuple[str, bool, tuple[str, ...], tuple[str, ...]]] = {
    "v1/namespaces": ("Namespace", False, ("ns",), ("status",)),
    "v1/services": ("Service", True, ("svc",), ("status",)),
    "v1/pods": ("Pod", True, ("po",), ("status",)),
    "v1/events": ("Event", True, ("ev",), ()),
    "v1/configmaps": ("ConfigMap", True, ("cm",), ()),
    "v1/secrets": ("Secret", True, (), ()),
    "apps/v1/deployments": ("Deployment", True, ("deploy",), ("status", "scale")),
    "apps/v1/replicasets": ("ReplicaSet", True, ("rs",), ("status", "scale")),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True, ("hpa",), ("status",)),
    "events.k8s.io/v1/events": ("Event", True, ("ev",), ()),
    "coordination.k8s.io/v1/leases": ("Lease", True, (), ()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": (
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        ("status",),
    ),
    "kopf.dev/v1/clusterkopfpeerings": ("ClusterKopfPeering", False, (), ()),
    "kopf.dev/v1/kopfpeerings": ("KopfPeering", True, (), ()),
}

# The ForecastModel CRD as the emulator installs it (discovery-relevant parts of k8s/crd.yaml).
FORECASTMODEL_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "forecastmodels.retailforecast.io"},
    "spec": {
        "group": "retailforecast.io",
        "scope": "Namespaced",
        "names": {
            "kind": "ForecastModel",
            "listKind": "ForecastModelList",
            "plural": "forecastmodels",
            "singular": "forecastmodel",
            "shortNames": ["fm"],
            "categories": ["retail-forecast"],
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}

_NAMESPACES_PATH = re.compile(r"/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?")

MAX_EVENTS = 100_000  # kept watch history; older resourceVersions get 410 Gone


class ApiError(Exception):
    """An API failure, rendered as a ``kind: Status`` body with its HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclasses.dataclass(frozen=True)
class _Event:
    rv: int
    resource: kmock.resource
    namespace: str | None
    type: str
    obj: Obj
    old: Obj | None  # the previous state (for MODIFIED), to evaluate selectors on both


@dataclasses.dataclass(eq=False)
class _Watcher:
    resource: kmock.resource
    namespace: str | None
    match: _Matcher
    queue: asyncio.Queue[_Event | None] = dataclasses.field(default_factory=asyncio.Queue)


@dataclasses.dataclass(frozen=True)
class _Matcher:
    """Parsed labelSelector + fieldSelector."""

    labels: tuple[tuple[str, str, frozenset[str]], ...] = ()  # (key, op, values)
    fields: tuple[tuple[str, str, str], ...] = ()  # (path, op, value)

    def __call__(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        labels: Mapping[str, str] = meta.get("labels") or {}
        for key, op, values in self.labels:
            present = key in labels
            if (
                (op == "exists" and not present)
                or (op == "!exists" and present)
                or (op == "in" and (not present or labels[key] not in values))
                or (op == "notin" and present and labels[key] in values)
            ):
                return False
        for path, op, value in self.fields:
            actual = meta.get(path.removeprefix("metadata."))
            if (op == "=") != (actual == value):
                return False
        return True


_SELECTOR_TERM = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[^\s=!,()]+)"
    r"|(?P<key>[^\s=!,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<val>[^\s=!,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\))?)\s*$"
)


def parse_label_selector(text: str) -> tuple[tuple[str, str, frozenset[str]], ...]:
    terms: list[tuple[str, str, frozenset[str]]] = []
    for raw in re.split(r",(?![^()]*\))", text):
        if not raw.strip():
            continue
        m = _SELECTOR_TERM.match(raw)
        if m is None:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {raw!r}")
        if m["nkey"]:
            terms.append((m["nkey"], "!exists", frozenset()))
        elif m["op"]:
            terms.append((m["key"], "in" if m["op"] in ("=", "==") else "notin", frozenset([m["val"]])))
        elif m["setop"]:
            values = frozenset(v.strip() for v in m["vals"].split(",") if v.strip())
            terms.append((m["key"], m["setop"], values))
        else:
            terms.append((m["key"], "exists", frozenset()))
    return tuple(terms)


def parse_field_selector(text: str) -> tuple[tuple[str, str, str], ...]:
    terms: list[tuple[str, str, str]] = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        m = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*$", raw)
        if m is None:
            raise ApiError(400, "BadRequest", f"invalid field selector: {raw!r}")
        path, op, value = m.groups()
        if path not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{path}"')
        terms.append((path, "!=" if op == "!=" else "=", value))
    return tuple(terms)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ApiError(422, "Invalid", f"path not found: {path!r}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch; any failing op (a failed ``test`` included) is a 422, as from the server."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise ApiError(422, "Invalid", f"invalid JSON-patch operation: {op!r}")
        kind, path = op.get("op"), op["path"]
        parts = _pointer(path)
        if kind == "test":
            if _resolve(doc, parts, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"the test failed: {path} is not {op.get('value')!r}")
            continue
        if kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_resolve(doc, src, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, src, op["from"])
            doc = _add(doc, parts, path, value)
        elif kind == "add":
            doc = _add(doc, parts, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, parts, path)
        elif kind == "replace":
            _resolve(doc, parts, path)
            doc = _add(doc, parts, path, copy.deepcopy(op.get("value")), replace=True)
        else:
            raise ApiError(422, "Invalid", f"unknown JSON-patch op: {kind!r}")
    return doc


def _add(doc: Any, parts: list[str], path: str, value: Any, replace: bool = False) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise ApiError(422, "Invalid", f"index out of range: {path!r}")
    else:
        raise ApiError(422, "Invalid", f"path not found: {path!r}")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        raise ApiError(422, "Invalid", "cannot remove the whole document")
    parent = _resolve(doc, parts[:-1], path)
    _resolve(doc, parts, path)
    if isinstance(parent, dict):
        del parent[parts[-1]]
    else:
        del parent[int(parts[-1])]
    return doc


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _res(resource: str | kmock.resource) -> kmock.resource:
    return resource if isinstance(resource, kmock.resource) else kmock.resource(resource)


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else f"{resource.version}"


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the API-server semantics listed in the module docstring.

    Python-side accessors (``read``, ``list_objects``, ``create_object``, ``patch_object``,
    ``replace_object``, ``delete_object``) run the same code as the HTTP endpoints, events included;
    a resource is ``"group/version/plural"`` (``"v1/pods"`` for the core group) or a ``kmock.resource``.
    """

    _rv: int = attrs.field(default=0, init=False)
    _log: list[_Event] = attrs.field(factory=list, init=False)
    _log_start: int = attrs.field(default=0, init=False)  # rv before the oldest kept event
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _uids: dict[str, Key] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Above kmock's own object fallbacks, below any reaction a test adds.
        (self.fallback**1)[self._is_object_request] << self._serve_object

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 cannot parse the cluster-scoped ``namespaces`` resource: ``/api/v1/namespaces`` crashes
        # its path parser (500) and ``/api/v1/namespaces/NAME`` parses as a namespace with no resource.
        # Such requests are parsed here; everything else goes through kmock unchanged.
        match = _NAMESPACES_PATH.fullmatch(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        parsed = parsing.ParsedPath("", "v1", "namespaces", None, match["name"], match["sub"])
        method = enums.method(raw_request.method)
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=body.decode("utf-8", "replace"),
            action=parsing.guess_k8s(parsed, method, dict(raw_request.query)),
            resource=kmock.resource("", "v1", "namespaces"),
            name=match["name"],
            subresource=match["sub"],
        )
        self._requests.append(request)
        response: aiohttp.web.StreamResponse = await self._handle(request)
        return response

    async def _handle(self, request: rendering.Request) -> Any:
        # Skip KubernetesEmulator._handle (its own naive state changes); keep the DSL dispatch.
        return await apps.RawHandler._handle(self, request)

    async def _serve_version(self, request: rendering.Request) -> Any:
        # kmock names the core group version "/v1"; the real server says "v1".
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        return payload

    # -- registration -----------------------------------------------------------------------------

    def register(
        self,
        resource: str | kmock.resource,
        kind: str,
        *,
        namespaced: bool = True,
        shortnames: Iterable[str] = (),
        subresources: Iterable[str] = (),
        singular: str | None = None,
        categories: Iterable[str] = (),
    ) -> None:
        """Serve a resource (discovery + object endpoints)."""
        res = _res(resource)
        self.resources[res] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            singular=singular or kind.lower(),
            verbs=set(ALL_VERBS),
            shortnames=set(shortnames),
            categories=set(categories),
            subresources=set(subresources),
        )

    def register_defaults(self) -> None:
        """Built-in kinds the operator and kopf touch, plus the ForecastModel CRD (as an object too)."""
        for name, (kind, namespaced, shortnames, subresources) in BUILTIN_RESOURCES.items():
            self.register(name, kind, namespaced=namespaced, shortnames=shortnames, subresources=subresources)
        self.create_object(CRDS, FORECASTMODEL_CRD)

    def _register_crd(self, crd: Mapping[str, Any]) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if version.get("served", True):
                self.register(
                    f"{spec['group']}/{version['name']}/{names['plural']}",
                    names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    shortnames=names.get("shortNames", ()),
                    singular=names.get("singular"),
                    categories=names.get("categories", ()),
                    subresources=(version.get("subresources") or {}).keys(),
                )

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        if resource not in self.resources:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({resource.plural})"
            )
        return self.resources[resource]

    def _has_status(self, resource: kmock.resource) -> bool:
        return "status" in self._info(resource).subresources

    # -- Python-side accessors -------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        return str(self._rv)

    def read(self, resource: str | kmock.resource, namespace: str | None, name: str) -> Obj | None:
        """A deep copy of the stored object, or None if absent."""
        key = (_res(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def list_objects(
        self,
        resource: str | kmock.resource,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[Obj]:
        """Live objects of a resource (all namespaces when ``namespace`` is None), in creation order."""
        res = _res(resource)
        matcher = _Matcher(parse_label_selector(label_selector), parse_field_selector(field_selector))
        return [copy.deepcopy(obj) for obj in self._live(res, namespace) if matcher(obj)]

    def create_object(
        self, resource: str | kmock.resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> Obj:
        res = _res(resource)
        namespace = namespace or body.get("metadata", {}).get("namespace")
        return copy.deepcopy(self._create(res, namespace, dict(body)))

    def patch_object(
        self,
        resource: str | kmock.resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        content_type: str = "application/merge-patch+json",
    ) -> Obj:
        res = _res(resource)
        return copy.deepcopy(self._patch(res, namespace, name, subresource, content_type, patch))

    def replace_object(
        self,
        resource: str | kmock.resource,
        namespace: str | None,
        name: str,
        body: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> Obj:
        res = _res(resource)
        return copy.deepcopy(self._replace(res, namespace, name, subresource, dict(body)))

    def delete_object(
        self,
        resource: str | kmock.resource,
        namespace: str | None,
        name: str,
        propagation: str = "Background",
    ) -> Obj:
        return copy.deepcopy(
            self._delete(_res(resource), namespace, name, {"propagationPolicy": propagation})
        )

    def close_watches(self) -> None:
        """End every open watch stream (before the HTTP server stops)."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)

    # -- HTTP dispatch ----------------------------------------------------------------------------------

    @staticmethod
    def _is_object_request(request: rendering.Request) -> bool:
        return request.resource is not None and request.resource.plural is not None

    def _serve_object(self, request: rendering.Request) -> rendering.Response:
        try:
            return self._dispatch(request)
        except ApiError as exc:
            return rendering.Response(status=exc.code, payload=exc.status())

    def _dispatch(self, request: rendering.Request) -> rendering.Response:
        assert request.resource is not None
        res = kmock.resource(request.resource.group, request.resource.version, request.resource.plural)
        info = self._info(res)
        namespace = request.namespace if info.namespaced else None
        method = str(request.method.value).upper()
        params = request.params
        sub = request.subresource
        if sub not in (None, "status"):
            raise ApiError(404, "NotFound", f"subresource {sub!r} is not served by the emulator")
        if sub == "status" and not self._has_status(res):
            raise ApiError(404, "NotFound", f"{res.plural} has no status subresource")
        if method == "GET" and params.get("watch") in ("true", "1"):
            return rendering.Response(status=200, payload=self._watch(request, res, namespace))
        if request.name is None:
            if method == "GET":
                return rendering.Response(status=200, payload=self._list(res, namespace, params))
            if method == "POST":
                body = self._body(request)
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be a JSON object")
                return rendering.Response(status=201, payload=self._create(res, namespace, body))
            if method == "DELETE":
                return rendering.Response(
                    status=200, payload=self._delete_collection(res, namespace, request)
                )
        else:
            name = request.name
            if method == "GET":
                obj = self.read(res, namespace, name)
                if obj is None:
                    raise self._not_found(res, name)
                return rendering.Response(status=200, payload=obj)
            if method == "PATCH":
                ctype = self._header(request, "content-type").split(";")[0].strip()
                obj = self._patch(res, namespace, name, sub, ctype, self._body(request))
                return rendering.Response(status=200, payload=obj)
            if method == "PUT":
                body = self._body(request)
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be a JSON object")
                return rendering.Response(status=200, payload=self._replace(res, namespace, name, sub, body))
            if method == "DELETE":
                options = self._body(request) if request.body else {}
                options = dict(options) if isinstance(options, dict) else {}
                if "propagationPolicy" in params:
                    options["propagationPolicy"] = params["propagationPolicy"]
                return rendering.Response(status=200, payload=self._delete(res, namespace, name, options))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    @staticmethod
    def _header(request: rendering.Request, name: str) -> str:
        for key, value in request.headers.items():
            if key.lower() == name:
                return value
        return ""

    @staticmethod
    def _body(request: rendering.Request) -> Any:
        try:
            return json.loads(request.body or b"null")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}") from exc

    @staticmethod
    def _not_found(resource: kmock.resource, name: str) -> ApiError:
        kind = f"{resource.plural}.{resource.group}" if resource.group else f"{resource.plural}"
        return ApiError(
            404, "NotFound", f'{kind} "{name}" not found', {"name": name, "kind": resource.plural}
        )

    # -- state ------------------------------------------------------------------------------------------

    def _live(self, resource: kmock.resource, namespace: str | None) -> list[Obj]:
        return [
            obj.raw
            for (res, ns, _), obj in self.objects.items()
            if res == resource and (namespace is None or ns == namespace) and not obj.deleted
        ]

    def _current(self, resource: kmock.resource, namespace: str | None, name: str) -> Obj:
        obj = self.read(resource, namespace, name)
        if obj is None:
            raise self._not_found(resource, name)
        return obj

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, type_: str, resource: kmock.resource, obj: Obj, old: Obj | None = None) -> None:
        event = _Event(
            int(obj["metadata"]["resourceVersion"]),
            resource,
            obj["metadata"].get("namespace"),
            type_,
            copy.deepcopy(obj),
            copy.deepcopy(old),
        )
        self._log.append(event)
        if len(self._log) > MAX_EVENTS:
            dropped = self._log[: len(self._log) - MAX_EVENTS]
            del self._log[: len(dropped)]
            self._log_start = dropped[-1].rv
        for watcher in self._watchers:
            if watcher.resource == resource and watcher.namespace in (None, event.namespace):
                watcher.queue.put_nowait(event)

    def _store(self, key: Key, obj: Obj) -> None:
        if key not in self.objects:
            self.objects[key] = copy.deepcopy(obj)
        else:
            self.objects[key].history.append(copy.deepcopy(obj))

    def _create(self, resource: kmock.resource, namespace: str | None, body: Obj) -> Obj:
        info = self._info(resource)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if info.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the object does not match the namespace on the request",
                )
            if not namespace:
                raise ApiError(400, "BadRequest", "a namespaced object needs a namespace")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise ApiError(
                    422, "Invalid", "metadata.name: Required value: name or generateName is required"
                )
            alphabet = string.ascii_lowercase + string.digits
            for _ in range(100):
                meta["name"] = prefix + "".join(random.choices(alphabet, k=5))
                if self.read(resource, namespace, meta["name"]) is None:
                    break
        name = meta["name"]
        if self.read(resource, namespace, name) is not None:
            kind = f"{resource.plural}.{resource.group}" if resource.group else f"{resource.plural}"
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind} "{name}" already exists',
                {"name": name, "kind": resource.plural},
            )
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
            meta.pop(field, None)
        obj["apiVersion"] = _api_version(resource)
        obj["kind"] = info.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        if self._has_status(resource):
            obj.pop("status", None)  # PrepareForCreate resets the status
        if resource == DEPLOYMENTS:
            obj.setdefault("spec", {}).setdefault("replicas", 1)
        meta["resourceVersion"] = self._next_rv()
        key: Key = (resource, namespace, name)
        self._store(key, obj)
        self._uids[meta["uid"]] = key
        if resource == CRDS:
            self._register_crd(obj)
        self._emit("ADDED", resource, obj)
        return obj

    def _patch(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        subresource: str | None,
        content_type: str,
        patch: Any,
    ) -> Obj:
        self._info(resource)
        old = self._current(resource, namespace, name)
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            new = merge_patch(old, patch)
        elif content_type == "application/json-patch+json":
            new = json_patch(old, patch)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {content_type}",
            )
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        return self._update(resource, namespace, name, subresource, old, new)

    def _replace(
        self, resource: kmock.resource, namespace: str | None, name: str, subresource: str | None, body: Obj
    ) -> Obj:
        self._info(resource)
        old = self._current(resource, namespace, name)
        if body.get("metadata", {}).get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        new = copy.deepcopy(body)
        new.setdefault("metadata", {})
        return self._update(resource, namespace, name, subresource, old, new)

    def _update(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        subresource: str | None,
        old: Obj,
        new: Obj,
    ) -> Obj:
        old_meta = old["metadata"]
        new_meta = new.get("metadata")
        if not isinstance(new_meta, dict):
            raise ApiError(422, "Invalid", "metadata must be an object")
        wanted_rv = new_meta.get("resourceVersion")
        if wanted_rv not in (None, "") and wanted_rv != old_meta["resourceVersion"]:
            kind = f"{resource.plural}.{resource.group}" if resource.group else f"{resource.plural}"
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name, "kind": resource.plural},
            )
        if subresource == "status":
            # Only .status changes through /status (ResetObjectMetaForStatus + spec reset).
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            if self._has_status(resource):
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "name",
                "namespace",
            ):
                if field in old_meta:
                    result["metadata"][field] = old_meta[field]
                else:
                    result["metadata"].pop(field, None)
            result["apiVersion"] = old["apiVersion"]
            result["kind"] = old["kind"]
            if old_meta.get("deletionTimestamp"):
                added = set(result["metadata"].get("finalizers") or []) - set(
                    old_meta.get("finalizers") or []
                )
                if added:
                    raise ApiError(
                        422,
                        "Invalid",
                        "metadata.finalizers: Forbidden: no new finalizers can be added "
                        "if the object is being deleted",
                    )
        result["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if result == old:
            return old  # a no-op write: no new resourceVersion, no event
        if subresource != "status" and self._spec_changed(old, result):
            result["metadata"]["generation"] = int(old_meta.get("generation", 0)) + 1
        result["metadata"]["resourceVersion"] = self._next_rv()
        key: Key = (resource, namespace, name)
        self._store(key, result)
        if resource == CRDS:
            self._register_crd(result)
        self._emit("MODIFIED", resource, result, old)
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            return self._remove(key, result, "Background")
        return result

    @staticmethod
    def _spec_changed(old: Obj, new: Obj) -> bool:
        if "spec" in old or "spec" in new:
            return bool(old.get("spec") != new.get("spec"))
        ignored = ("metadata", "status", "resourceVersion")
        return {k: v for k, v in old.items() if k not in ignored} != {
            k: v for k, v in new.items() if k not in ignored
        }

    def _delete(self, resource: kmock.resource, namespace: str | None, name: str, options: Obj) -> Obj:
        self._info(resource)
        old = self._current(resource, namespace, name)
        meta = old["metadata"]
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if preconditions.get(field) not in (None, meta.get(field)):
                raise ApiError(
                    409,
                    "Conflict",
                    f"Precondition failed: {field} in precondition: {preconditions[field]}, "
                    f"{field} in object meta: {meta.get(field)}",
                )
        propagation = str(options.get("propagationPolicy") or "Background")
        key: Key = (resource, namespace, name)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old  # already being deleted
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["generation"] = int(meta.get("generation", 0)) + 1
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._store(key, new)
            self._emit("MODIFIED", resource, new, old)
            return new
        return self._remove(key, old, propagation)

    def _remove(self, key: Key, obj: Obj, propagation: str) -> Obj:
        resource = key[0]
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[key].delete()
        self._uids.pop(final["metadata"]["uid"], None)
        self._emit("DELETED", resource, final)
        self._collect_dependents(final["metadata"]["uid"], orphan=propagation == "Orphan")
        return final

    def _collect_dependents(self, owner_uid: str, *, orphan: bool) -> None:
        """Background garbage collection of objects owned by a deleted object (recursive)."""
        for (res, ns, name), stored in list(self.objects.items()):
            if stored.deleted:
                continue
            obj = stored.raw
            refs = obj.get("metadata", {}).get("ownerReferences") or []
            if not any(ref.get("uid") == owner_uid for ref in refs):
                continue
            alive = [ref for ref in refs if ref.get("uid") != owner_uid and ref.get("uid") in self._uids]
            if orphan or alive:
                remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
                patch = [{"op": "replace", "path": "/metadata/ownerReferences", "value": remaining}]
                self._patch(res, ns, name, None, "application/json-patch+json", patch)
            else:
                with contextlib.suppress(ApiError):
                    self._delete(res, ns, name, {"propagationPolicy": "Background"})

    def _delete_collection(
        self, resource: kmock.resource, namespace: str | None, request: rendering.Request
    ) -> Obj:
        matcher = _Matcher(
            parse_label_selector(request.params.get("labelSelector", "")),
            parse_field_selector(request.params.get("fieldSelector", "")),
        )
        deleted = []
        for obj in self._live(resource, namespace):
            if matcher(obj):
                meta = obj["metadata"]
                deleted.append(self._delete(resource, meta.get("namespace"), meta["name"], {}))
        info = self._info(resource)
        return {
            "apiVersion": _api_version(resource),
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": deleted,
        }

    # -- list & watch -----------------------------------------------------------------------------------

    def _list(self, resource: kmock.resource, namespace: str | None, params: Mapping[str, str]) -> Obj:
        info = self._info(resource)
        items = self.list_objects(
            resource, namespace, params.get("labelSelector", ""), params.get("fieldSelector", "")
        )
        return {
            "apiVersion": _api_version(resource),
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _watch(
        self, request: rendering.Request, resource: kmock.resource, namespace: str | None
    ) -> AsyncIterator[bytes | Obj]:
        params = request.params
        fields = params.get("fieldSelector", "")
        if request.name is not None:  # a watch on a named URL (deprecated, but served)
            fields = ",".join(filter(None, [fields, f"metadata.name={request.name}"]))
        matcher = _Matcher(
            parse_label_selector(params.get("labelSelector", "")), parse_field_selector(fields)
        )
        since_text = params.get("resourceVersion", "")
        try:
            since = int(since_text or 0)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion: {since_text!r}") from exc
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None

        # Subscribe first, then snapshot/replay — in the same synchronous step: nothing can slip between.
        watcher = _Watcher(resource, namespace, matcher)
        self._watchers.add(watcher)
        initial: list[Obj] = []
        if since == 0:
            initial = [{"type": "ADDED", "object": obj} for obj in self.list_objects(resource, namespace)]
            initial = [event for event in initial if matcher(event["object"])]
            if params.get("sendInitialEvents") == "true":
                initial.append(self._initial_events_end(resource))
        elif since < self._log_start:
            initial = [
                {"type": "ERROR", "object": ApiError(410, "Expired", "too old resource version").status()}
            ]
            self.close_watcher(watcher)
        else:
            for event in self._log:
                if event.rv > since and event.resource == resource and namespace in (None, event.namespace):
                    initial.extend(self._render_event(event, matcher))
        return self._stream(request, watcher, initial, timeout)

    def close_watcher(self, watcher: _Watcher) -> None:
        watcher.queue.put_nowait(None)

    @staticmethod
    def _initial_events_end(resource: kmock.resource) -> Obj:
        return {
            "type": "BOOKMARK",
            "object": {
                "apiVersion": _api_version(resource),
                "kind": "Bookmark",
                "metadata": {"resourceVersion": "0", "annotations": {"k8s.io/initial-events-end": "true"}},
            },
        }

    @staticmethod
    def _render_event(event: _Event, matcher: _Matcher) -> list[Obj]:
        now = matcher(event.obj)
        before = event.old is not None and matcher(event.old)
        if event.type == "MODIFIED":
            kind = "MODIFIED" if now and before else "ADDED" if now else "DELETED" if before else None
        else:
            kind = event.type if now else None
        if kind is None:
            return []
        return [{"type": kind, "object": copy.deepcopy(event.obj)}]

    async def _stream(
        self, request: rendering.Request, watcher: _Watcher, initial: list[Obj], timeout: float | None
    ) -> AsyncIterator[bytes | Obj]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        raw = request._raw_request
        try:
            yield b""  # send the headers now
            for item in initial:
                yield item
            while True:
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=0.5)
                except TimeoutError:
                    gone = raw is not None and (raw.transport is None or raw.transport.is_closing())
                    if gone or (deadline is not None and loop.time() >= deadline):
                        return
                    continue
                if event is None:
                    return
                for item in self._render_event(event, watcher.match):
                    yield item
        finally:
            self._watchers.discard(watcher)


@contextlib.asynccontextmanager
async def serve(
    *, defaults: bool = True, namespaces: Iterable[str] = ("default",), strict: bool = True
) -> AsyncIterator[ApiServer]:
    """Run an :class:`ApiServer` on 127.0.0.1 at a free port; ``api.url`` is its base URL.

    ``defaults``: register the built-in kinds and the ForecastModel CRD; ``namespaces``: Namespace objects
    to create (kopf serves a namespace only once it has seen its Namespace object).

    ``strict``: an unexpected exception inside the emulator fails the test at exit (kmock's strict mode).
    """
    api = ApiServer(strict=strict)
    if defaults:
        api.register_defaults()
        for namespace in namespaces:
            api.create_object("v1/namespaces", {"metadata": {"name": namespace}})
    async with api, kmock.Server(api, host="127.0.0.1"):
        try:
            yield api
        finally:
            api.close_watches()


def _patch_deployment_status(api: ApiServer, namespace: str, name: str, status: Obj) -> Obj:
    deployment = api.read(DEPLOYMENTS, namespace, name)
    if deployment is None:
        raise LookupError(f"no Deployment {namespace}/{name}")
    status = {"observedGeneration": deployment["metadata"]["generation"], **status}
    return api.patch_object(DEPLOYMENTS, namespace, name, {"status": status}, subresource="status")


def _condition(type_: str, status: str, reason: str, message: str) -> Obj:
    now = _now()
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _spec_replicas(api: ApiServer, namespace: str, name: str) -> int:
    deployment = api.read(DEPLOYMENTS, namespace, name)
    if deployment is None:
        raise LookupError(f"no Deployment {namespace}/{name}")
    return int(deployment.get("spec", {}).get("replicas", 1))


def mark_deployment_available(api: ApiServer, namespace: str, name: str) -> Obj:
    """Play the Deployment controller + kubelet: all ``spec.replicas`` are updated, ready and available."""
    replicas = _spec_replicas(api, namespace, name)
    return _patch_deployment_status(
        api,
        namespace,
        name,
        {
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "unavailableReplicas": None,
            "conditions": [
                _condition(
                    "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
                ),
                _condition(
                    "Progressing", "True", "NewReplicaSetAvailable", f'ReplicaSet "{name}" has progressed.'
                ),
            ],
        },
    )


def mark_deployment_stuck(api: ApiServer, namespace: str, name: str) -> Obj:
    """Play the Deployment controller for pods that never get ready: the progress deadline is exceeded."""
    replicas = _spec_replicas(api, namespace, name)
    return _patch_deployment_status(
        api,
        namespace,
        name,
        {
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": None,
            "availableReplicas": None,
            "unavailableReplicas": replicas,
            "conditions": [
                _condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                ),
                _condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{name}" has timed out progressing.',
                ),
            ],
        },
    )

"""The operator's Kubernetes API calls, through the `kubernetes` package (credentials, HTTP, discovery).

Children are written with server-side apply under one field manager (`resources.MANAGER`): the applied
object is the whole intent, so a field the spec no longer sets disappears and a manual edit of a field
we own is taken back. The status is a merge patch guarded by `metadata.resourceVersion`, so a concurrent
writer gets a 409 and the caller retries with a fresh read. The package's client is synchronous: each
call runs in a worker thread of the client's own pool, so the event loop (kopf's watches) never blocks on
the network. The pool is sized for waiting, not for cores: on asyncio's default executor (cores + 4
threads) 200 new ForecastModels queued behind 6 threads (benchmarks/operator.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import kubernetes.client
import kubernetes.config
import kubernetes.dynamic
import kubernetes.dynamic.exceptions
import urllib3

from retail_forecast.operator.failures import NO_ANSWER

MERGE_PATCH: Final = "application/merge-patch+json"
REQUEST_TIMEOUT_SECONDS: Final = 30
# Concurrent API calls, each a thread blocked on its answer, and as many pooled connections, so none waits
# for a socket (the package's default pool is 5 per core).
IO_THREADS: Final = 32


class ApiError(Exception):
    """The server's answer to `request` (status 0: no answer: a timeout or a refused connection)."""

    def __init__(
        self, status: int, reason: str, message: str, request: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(f"{request}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.request = request
        self.retry_after = retry_after


class NotFound(ApiError):  # noqa: N818 - mirrors the API's reason
    pass


class Conflict(ApiError):  # noqa: N818
    pass


class NoKubernetesApi(RuntimeError):  # noqa: N818 - a plain statement of the problem
    pass


def load_configuration(context: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster service account first; else KUBECONFIG (or ~/.kube/config) at its current context.

    A named `context` always means the kubeconfig. Read at call time (not at import), so a login retried
    after a 401 sees a rotated token or a re-run exec plugin.
    """
    configuration = kubernetes.client.Configuration()
    if context is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            pass
        else:
            return configuration
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        kubernetes.config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration, persist_config=False
        )
    except kubernetes.config.ConfigException as exc:
        raise NoKubernetesApi(
            f"no Kubernetes API: not in a cluster, and the kubeconfig ({path}) gives none: {exc}"
        ) from None
    return configuration


def authorization(configuration: kubernetes.client.Configuration) -> str | None:
    """The Authorization header the configuration asks for (refreshing a rotated or expired token)."""
    bearer = configuration.auth_settings().get("BearerToken")
    return None if bearer is None else str(bearer["value"])


def api_version(group: str, version: str) -> str:
    return version if group in {"", "core"} else f"{group}/{version}"


def _retry_after(exc: kubernetes.client.ApiException, payload: Any) -> float | None:
    """Seconds the server asks us to wait: the Retry-After header, else the Status' retryAfterSeconds."""
    header = (exc.headers or {}).get("Retry-After")
    details = payload.get("details") if isinstance(payload, dict) else None
    found = header or (details.get("retryAfterSeconds") if isinstance(details, dict) else None)
    try:
        return float(found) if found is not None else None
    except ValueError:
        return None  # an HTTP date: rare from the API server, and the backoff still applies


def _api_error(exc: kubernetes.client.ApiException, request: str) -> ApiError:
    """The server's Status (reason and message) as our error; 404 and 409 get their own types."""
    status, reason, message = int(exc.status or 0), str(exc.reason or ""), str(exc.body or "")
    try:
        payload = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        payload = {}
    if isinstance(payload, dict):
        reason = str(payload.get("reason") or reason)
        message = str(payload.get("message") or message)
    kind = {404: NotFound, 409: Conflict}.get(status, ApiError)
    return kind(status, reason, message, request, _retry_after(exc, payload))


class Kube:
    """One `kubernetes` ApiClient, its dynamic client (discovery cached per process) and its threads."""

    def __init__(self, configuration: kubernetes.client.Configuration, field_manager: str) -> None:
        self.configuration = configuration
        self.field_manager = field_manager
        configuration.connection_pool_maxsize = IO_THREADS  # read when the ApiClient makes its pool
        self._api = kubernetes.client.ApiClient(configuration)
        self._threads = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="kube")
        self._cache = Path(tempfile.gettempdir()) / f"forecast-operator-discovery-{uuid.uuid4().hex}.json"
        self._dynamic: kubernetes.dynamic.DynamicClient | None = None
        self._discovery = threading.Lock()
        self._closed = False

    def _resource(self, group: str, version: str, plural: str) -> Any:
        """The dynamic client's view of a resource, discovered by one thread while the others wait.

        Unguarded, every thread of a fresh operator built its own discovery at once (the same paths
        fetched once per thread, and the cache file read while another thread wrote it).
        """
        with self._discovery:
            if self._dynamic is None:
                self._dynamic = kubernetes.dynamic.DynamicClient(self._api, cache_file=str(self._cache))
            return self._dynamic.resources.get(api_version=api_version(group, version), name=plural)

    async def _call(
        self,
        group: str,
        version: str,
        plural: str,
        method: str,
        subresource: str | None = None,
        **kwargs: Any,
    ) -> Any:
        what = plural if subresource is None else f"{plural}/{subresource}"
        verb = "apply" if method == "server_side_apply" else method
        request = f"{verb} {what}/{kwargs['name']}" if kwargs.get("name") else f"{verb} {what}"

        def call() -> Any:
            try:
                resource = self._resource(group, version, plural)  # discovery, the first time
                target = resource if subresource is None else resource.subresources[subresource]
                found = getattr(target, method)(_request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
            except kubernetes.client.ApiException as exc:
                raise _api_error(exc, request) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:  # a timeout, a refused connection
                raise ApiError(NO_ANSWER, type(exc).__name__, str(exc)[:300], request) from None
            return found.to_dict() if hasattr(found, "to_dict") else found

        if self._closed:
            # The operator is stopping: kopf runs the cleanup handler (which closes this client) before
            # it cancels the reconciles still running. Theirs are cancelled now, not failed with "cannot
            # schedule new futures after shutdown" half-way through a reconcile.
            raise asyncio.CancelledError(f"{request}: the operator is stopping")
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def close(self) -> None:
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._threads, self._api.close)
        self._threads.shutdown()
        self._cache.unlink(missing_ok=True)

    async def get(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call(
                group, version, plural, "get", name=name, namespace=namespace
            )
        except NotFound:
            return None
        return found

    async def list(
        self, group: str, version: str, plural: str, namespace: str, selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        found = await self._call(group, version, plural, "get", namespace=namespace, label_selector=labels)
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    async def apply(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        body: dict[str, Any],
        *,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """Server-side apply of a whole intent; `force`: our manager takes back fields others changed."""
        applied: dict[str, Any] = await self._call(
            group,
            version,
            plural,
            "server_side_apply",
            body=body,
            name=body["metadata"]["name"],
            namespace=namespace,
            field_manager=field_manager or self.field_manager,
            force_conflicts=True,
        )
        return applied

    async def delete(self, group: str, version: str, plural: str, namespace: str, name: str) -> bool:
        """Delete in the background (dependents go to the garbage collector); False: it was gone."""
        try:
            await self._call(
                group,
                version,
                plural,
                "delete",
                name=name,
                namespace=namespace,
                body={"propagationPolicy": "Background"},
            )
        except NotFound:
            return False
        return True

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        patched: dict[str, Any] = await self._call(
            group,
            version,
            plural,
            "patch",
            subresource="status",
            body=body,
            name=name,
            namespace=namespace,
            content_type=MERGE_PATCH,
        )
        return patched

"""A small async Kubernetes API client: exactly the calls the operator makes, with real API semantics.

Writes are merge patches guarded by `metadata.resourceVersion` where a lost update would matter (status),
so a concurrent writer gets a 409 and the caller retries with a fresh read. Credentials are the
`kubernetes` package's (in-cluster service account, else a kubeconfig): the same Configuration serves
kopf (through its login handler) and this client, so nothing here parses a token, a certificate or a
kubeconfig itself.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
import kubernetes.client
import kubernetes.config

MERGE_PATCH: Final = "application/merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


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


def ssl_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext | bool:
    """TLS as the configuration says: its CA (else the system's) and client certificate; False: insecure."""
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def api_path(group: str, version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{version}" if group in {"", "core"} else f"/apis/{group}/{version}"
    if namespace is not None:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    return base + (f"/{quote(name)}" if name else "")


class Kube:
    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.configuration = configuration
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Accept": "application/json"},
                connector=aiohttp.TCPConnector(ssl=ssl_context(self.configuration)),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        session = await self._client()
        url = self.configuration.host.rstrip("/") + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Content-Type": content_type}
        header = authorization(self.configuration)
        if header:
            headers["Authorization"] = header
        async with session.request(method, url, json=body, headers=headers) as response:
            payload: dict[str, Any] = (
                await response.json(content_type=None) if response.content_length != 0 else {}
            )
            if response.status >= 400:
                reason = str(payload.get("reason", response.reason))
                message = str(payload.get("message", ""))
                kind = {404: NotFound, 409: Conflict}.get(response.status, ApiError)
                raise kind(response.status, reason, message)
            return payload

    async def get(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.request("GET", api_path(group, version, plural, namespace, name))
        except NotFound:
            return None

    async def list(
        self, group: str, version: str, plural: str, namespace: str, selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        found = await self.request(
            "GET", api_path(group, version, plural, namespace), params={"labelSelector": labels}
        )
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    async def create(
        self, group: str, version: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.request("POST", api_path(group, version, plural, namespace), body=body)

    async def patch(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        path = api_path(group, version, plural, namespace, name) + (f"/{subresource}" if subresource else "")
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

"""A small async Kubernetes API client: exactly the calls the operator makes, with real API semantics.

Writes are merge patches guarded by `metadata.resourceVersion` where a lost update would matter (status),
so a concurrent writer gets a 409 and the caller retries with a fresh read. The same credentials serve
kopf (through its login handler) and this client.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp

SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
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


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    token_file: str | None = None

    def bearer(self) -> str | None:
        """The current token: projected service-account tokens are rotated in place by the kubelet."""
        if self.token_file is not None:
            return Path(self.token_file).read_text().strip()
        return self.token

    @classmethod
    def discover(cls) -> Credentials:
        """In-cluster service account; or FORECAST_KUBE_SERVER (+ token) for local runs and tests."""
        explicit = os.environ.get("FORECAST_KUBE_SERVER")
        if explicit:
            return cls(
                server=explicit.rstrip("/"),
                token=os.environ.get("FORECAST_KUBE_TOKEN"),
                insecure=os.environ.get("FORECAST_KUBE_INSECURE", "") == "true",
            )
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if host and port:
            return cls(
                server=f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}",
                token=(SERVICE_ACCOUNT / "token").read_text().strip(),
                ca_file=str(SERVICE_ACCOUNT / "ca.crt"),
                token_file=str(SERVICE_ACCOUNT / "token"),
            )
        raise RuntimeError("no Kubernetes API: not in a cluster and FORECAST_KUBE_SERVER is not set")


def api_path(group: str, version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{version}" if group in {"", "core"} else f"/apis/{group}/{version}"
    if namespace is not None:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    return base + (f"/{quote(name)}" if name else "")


class Kube:
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context: ssl.SSLContext | bool = True
            if self.credentials.insecure:
                context = False
            elif self.credentials.ca_file:
                context = ssl.create_default_context(cafile=self.credentials.ca_file)
            self._session = aiohttp.ClientSession(
                base_url=self.credentials.server,
                headers={"Accept": "application/json"},
                connector=aiohttp.TCPConnector(ssl=context),
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
        url = path + (f"?{urlencode(params)}" if params else "")
        headers = {"Content-Type": content_type}
        token = self.credentials.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
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

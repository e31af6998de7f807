"""Fault injection on the real API server: a validating admission webhook that refuses the operator's writes.

The webhook is an HTTPS server on 127.0.0.1 (a certificate from tests/controlplane.py's PKI, its CA in
the configuration's `caBundle`). The API server calls it for every create and update of a Deployment in
one namespace by one user (the operator's ServiceAccount); it refuses the first `count` of them with the
status code and message it is told (422, 429, 500), or sleeps past the webhook's timeout so the API
server answers with its own timeout error, then allows everything. What the operator sees are the API
server's real answers.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from cryptography.hazmat.primitives import serialization

from tests.controlplane import Client, certificate_authority, issue

WEBHOOK: Final = "faults.retailforecast.io"
TIMEOUT_SECONDS: Final = 1
REASONS: Final = {422: "Invalid", 429: "TooManyRequests", 500: "InternalError"}


@dataclass
class Plan:
    """Refuse the next `count` writes with `code` and `message`; `sleep` > 0: hang past the timeout."""

    count: int = 0
    code: int = 422
    message: str = ""
    sleep: float = 0.0


class AdmissionFaults:
    """The webhook server; `configuration()` is the ValidatingWebhookConfiguration that points at it."""

    def __init__(self, workdir: Path, user: str) -> None:
        self.user = user
        self.plan = Plan()
        self.refused = 0  # writes refused (or timed out) so far
        self.allowed = 0  # the operator's writes let through
        self._lock = threading.Lock()
        ca = certificate_authority("webhook-ca")
        self.ca_pem = ca.cert.public_bytes(serialization.Encoding.PEM)
        cert, key = issue(ca, "webhook", server_names=["127.0.0.1"]).write(workdir, "webhook")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}/validate"

    def fail(self, count: int, code: int, message: str = "", sleep: float = 0.0) -> None:
        with self._lock:
            self.plan = Plan(count, code, message or f"injected {code} for the test", sleep)

    def _decide(self, review: dict[str, Any]) -> dict[str, Any]:
        request = review.get("request") or {}
        answer: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
        if (request.get("userInfo") or {}).get("username") != self.user:
            return answer  # the test's own writes and the controllers' pass
        with self._lock:
            plan = self.plan
            if plan.count <= 0:
                self.allowed += 1
                return answer
            plan.count -= 1
            self.refused += 1
        if plan.sleep:
            time.sleep(plan.sleep)  # the API server stops waiting after TIMEOUT_SECONDS
        status = {"code": plan.code, "reason": REASONS.get(plan.code, ""), "message": plan.message}
        return {**answer, "allowed": False, "status": status}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        faults = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                body = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": faults._decide(review),
                    }
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the API server gave up waiting (the timeout case)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def configuration(self, namespace: str) -> dict[str, Any]:
        """Deployments in `namespace`, created or updated by `user`; a failure to call it refuses."""
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": f"faults-{namespace}"},
            "webhooks": [
                {
                    "name": WEBHOOK,
                    "clientConfig": {"url": self.url, "caBundle": base64.b64encode(self.ca_pem).decode()},
                    "rules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                            "scope": "Namespaced",
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    # Beta and on in v1.28; the server checks the user too, in case a cluster has it off.
                    "matchConditions": [
                        {"name": "operator", "expression": f"request.userInfo.username == '{self.user}'"}
                    ],
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": TIMEOUT_SECONDS,
                }
            ],
        }

    def register(self, client: Client, namespace: str) -> None:
        client.apply([self.configuration(namespace)])

    def unregister(self, client: Client, namespace: str) -> None:
        client.resource("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration").delete(
            name=f"faults-{namespace}"
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

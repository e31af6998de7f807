"""Admission control: overload becomes a fast 503 with Retry-After, never unbounded latency or memory.

A scoring request (v2 infer, /v1/forecast) is admitted, or refused, from its headers alone, before its
body is read: it takes one of `max_requests` places and reserves the bytes its body may take (its
Content-Length, or its route's body limit when it does not say) from `max_body_bytes`. What admitted
requests wait for is bounded by that: forecasts for one of the forecast threads, infer requests for the
model, whose queue the batcher also bounds in rows. Probes and /metrics never pass through here. Pure
bookkeeping for one event loop: no locks, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

# The reasons of forecast_requests_rejected_total.
CONCURRENCY: Final = "concurrency"
BODY_BYTES: Final = "body_bytes"
QUEUE: Final = "queue"
REASONS: Final = (CONCURRENCY, BODY_BYTES, QUEUE)


class Overloaded(Exception):  # noqa: N818 - an HTTP outcome (503), not a programming error
    """The server is full for now; `reason` labels the refusal in the metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Admission:
    def __init__(self, max_requests: int, max_body_bytes: int) -> None:
        if min(max_requests, max_body_bytes) < 1:
            raise ValueError("admission limits must be at least 1")
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.requests = 0
        self.body_bytes = 0

    @contextmanager
    def admit(self, body_bytes: int) -> Iterator[None]:
        """Hold a place for one request while the block runs, or raise `Overloaded` at once.

        A lone request is always admitted, however large its body may be: the body limits bound it.
        """
        if self.requests >= self.max_requests:
            raise Overloaded(CONCURRENCY, f"server busy: {self.max_requests} requests in progress, the limit")
        if self.requests and self.body_bytes + body_bytes > self.max_body_bytes:
            raise Overloaded(
                BODY_BYTES,
                f"server busy: {self.body_bytes} bytes of request bodies in progress; this one may take "
                f"{body_bytes} more (limit {self.max_body_bytes})",
            )
        self.requests += 1
        self.body_bytes += body_bytes
        try:
            yield
        finally:
            self.requests -= 1
            self.body_bytes -= body_bytes

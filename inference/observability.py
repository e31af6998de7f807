"""Prometheus metrics, JSON logs, request ids and the last-resort error answer: one ASGI middleware, one
registry per app."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from retail_forecast.core.drift import RollingSketch
from retail_forecast.inference.admission import REASONS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BATCH_ROWS_BUCKETS: Final = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
REQUEST_ID_HEADER: Final = b"x-request-id"
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
logger = logging.getLogger("retail_forecast.inference")


class Metrics:
    """The service's metrics; names follow Prometheus conventions (base units, _total counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "forecast_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "forecast_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "forecast_rows_scored", "Feature rows scored by the model", ["api"], registry=self.registry
        )
        self.batch_rows = Histogram(
            "forecast_model_batch_rows",
            "Rows per model run: one request's, or several requests' scored together",
            buckets=BATCH_ROWS_BUCKETS,
            registry=self.registry,
        )
        self.load_seconds = Gauge(
            "forecast_model_load_seconds", "Time to verify and load the model", registry=self.registry
        )
        self.state = Enum(
            "forecast_model_state",
            "loading until the model is loaded and self-checked; then ready, or failed (never serves)",
            states=["loading", "ready", "failed"],
            registry=self.registry,
        )
        self.golden_deviation = Gauge(
            "forecast_model_golden_max_deviation",
            "Largest relative deviation from the manifest's golden outputs at the self-check",
            registry=self.registry,
        )
        self.info = Info("forecast_model", "The served model", registry=self.registry)
        self.rejected = Counter(
            "forecast_requests_rejected",
            "Scoring requests refused with 503 because the server was full, by the limit that was reached",
            ["reason"],
            registry=self.registry,
        )
        for reason in REASONS:  # present at 0 from the start, so a rate() sees the first refusal
            self.rejected.labels(reason)


DRIFT_PSI: Final = "forecast_feature_drift_psi"
DRIFT_ROWS: Final = "forecast_feature_drift_window_rows"


class DriftCollector(Collector):
    """Input drift computed when scraped, from the served model's rolling sketch (none: no samples).

    Labels are the manifest's reference feature names only, so their number is bounded by the model.
    """

    def __init__(self, sketch: Callable[[], RollingSketch | None]) -> None:
        self._sketch = sketch

    def describe(self) -> Iterator[Metric]:  # names known without a scrape (registration calls this)
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        sketch = self._sketch()
        if sketch is not None:
            rows, scores = sketch.scores()
            families[1].add_metric([], rows)
            for feature, value in scores.items():
                families[0].add_metric([feature], value)
        yield from families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                DRIFT_PSI,
                "Population stability index of a feature's served values over the last hour against its "
                "training distribution (0.25 and above: a significant shift)",
                labels=["feature"],
            ),
            GaugeMetricFamily(DRIFT_ROWS, "Served feature rows the drift scores are computed from"),
        )


def error_body(message: str, **fields: str) -> bytes:
    """Every error the service answers: {"error": "...", ...} (DESIGN.md)."""
    return orjson.dumps({"error": message, **fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served, if any."""

    @staticmethod
    def converter(seconds: float | None = None) -> time.struct_time:  # UTC, for the "Z" in "time"
        return time.gmtime(seconds)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stdout for the serving process, with the logging module's documented savings:
    no caller, thread or process lookups for fields no line shows (the access log is per request)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by our access log line


class ObservabilityMiddleware:
    """Request id (from X-Request-ID or new), latency and status metrics, and one access log line.

    It is also the last resort for a failure nothing else handled: the traceback is logged with the
    request id, and the client gets a 500 in the documented error shape with that id (not Starlette's
    plain-text 500), so the two can be matched.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # labelled children, looked up once per (route, method[, status]): `labels()` takes a lock and
        # validates its arguments every call, which shows on the hot path of small requests
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        incoming = b""
        for key, value in scope["headers"]:
            if key == REQUEST_ID_HEADER:
                incoming = value
                break
        rid = incoming.decode("latin-1")[:128] if incoming else os.urandom(16).hex()
        id_header = (REQUEST_ID_HEADER, rid.encode("latin-1"))
        token = request_id.set(rid)
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error", extra={"fields": {"method": scope["method"], "path": scope["path"]}}
            )
            if started:  # too late for an answer: the server closes the connection
                raise
            body = error_body("internal error", request_id=rid)
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
            await send_with_id({"type": "http.response.start", "status": 500, "headers": headers})
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - began
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            counted = self._counted.get((template, method, status))
            if counted is None:
                counted = self.metrics.requests.labels(template, method, str(status))
                self._counted[(template, method, status)] = counted
            counted.inc()
            timed = self._timed.get((template, method))
            if timed is None:
                timed = self._timed[(template, method)] = self.metrics.latency.labels(template, method)
            timed.observe(elapsed)
            if self.access_log:
                logger.info(
                    "request",
                    extra={
                        "fields": {
                            "method": method,
                            "path": scope["path"],
                            "route": template,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                        }
                    },
                )
            request_id.reset(token)

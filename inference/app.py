"""The scoring service: Open Inference Protocol v2 for the raw model, and the domain forecast API.

The v2 infer route is plain ASGI on the hot path, where HTTP and JSON, not the model, are the cost: it
reads the body with simdjson, scores through the batcher (requests that wait together run together)
and answers with orjson bytes. /v1/forecast is plain ASGI too, so that its body is bounded while it is
read, before anything parses it. Both are admitted or refused from their headers (`Admission`).
Everything else uses ordinary FastAPI routes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import simdjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from retail_forecast import __version__
from retail_forecast.core.drift import Bins, RollingSketch
from retail_forecast.core.schema import DataError
from retail_forecast.inference.admission import REASONS, Admission, Overloaded
from retail_forecast.inference.batching import COALESCE_ROWS, OFFLOAD_ROWS, Batcher
from retail_forecast.inference.forecast import (
    ForecastInputError,
    ForecastRequest,
    ForecastResponse,
    forecast,
    request_model,
)
from retail_forecast.inference.limits import RETRY_AFTER_SECONDS, Limits
from retail_forecast.inference.model import LoadedModel, load_model
from retail_forecast.inference.observability import (
    DriftCollector,
    Metrics,
    ObservabilityMiddleware,
    Receive,
    Scope,
    Send,
    error_body,
)

logger = logging.getLogger("retail_forecast.inference")
JSON_TYPE: Final = "application/json"
JSON_TYPE_BYTES: Final = JSON_TYPE.encode()
DATATYPE: Final = "FP32"
# A validation error lists at most this many problems: enough to fix a request, bounded for a large one.
MAX_LISTED_PROBLEMS: Final = 10


@dataclass
class ModelState:
    """What readiness reports: a model that loaded and passed its self-check, or why not (yet)."""

    model: LoadedModel | None = None
    batcher: Batcher | None = None
    drift: RollingSketch | None = None  # the served model's: a new model starts a new sketch
    error: str | None = None
    stopping: bool = False  # SIGTERM: still serving, no longer ready

    def stop(self) -> None:
        self.stopping = True


class BadRequest(Exception):  # noqa: N818 - an HTTP outcome, not a programming error
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _retry_headers(status: int) -> dict[str, str]:
    """A 503 (overloaded, or no model yet) tells the client when to try again; after a 408 the rest of
    the body may still be on its way, so the connection closes."""
    if status == 503:
        return {"retry-after": str(RETRY_AFTER_SECONDS)}
    return {"connection": "close"} if status == 408 else {}


def _error(message: str, status: int) -> Response:
    return Response(
        error_body(message), status_code=status, media_type=JSON_TYPE, headers=_retry_headers(status)
    )


def invalid_request(errors: Sequence[Mapping[str, Any]], skip: int = 0) -> BadRequest:
    """pydantic's errors as one message naming each field; a list over its limit makes it a 413.

    `skip` drops leading location parts (FastAPI's "body"/"path").
    """
    problems = [f"{'.'.join(str(p) for p in err['loc'][skip:]) or 'body'}: {err['msg']}" for err in errors]
    more = len(problems) - MAX_LISTED_PROBLEMS
    message = "; ".join(problems[:MAX_LISTED_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    too_long = any(err["type"] == "too_long" for err in errors)  # lists: series, history
    return BadRequest(message, status=413 if too_long else 422)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON_TYPE
    )


INFER_REQUEST_SCHEMA: Final = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                    "datatype": {"type": "string", "enum": [DATATYPE]},
                    "parameters": {"type": "object"},
                    "data": {"type": "array", "items": {}},
                },
            },
        },
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
}


def parse_infer(body: bytes, model: LoadedModel, max_rows: int) -> tuple[np.ndarray[Any, Any], str | None]:
    """Validate a v2 infer body into an [N, F] float32 array; every problem is a `BadRequest`.

    simdjson copies the numbers of `data` straight into a buffer of doubles, without a Python object
    per number: about three times faster than `orjson.loads` + `np.array`, which made JSON, not the
    model, the cost of a large batch. As the protocol says, nesting in `data` does not matter: the
    values are taken flat in row-major order and `shape` says how they form the tensor.
    """
    try:
        payload = simdjson.Parser().parse(body)
    except ValueError as exc:  # malformed, not UTF-8, or a number no double can hold
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, simdjson.Object):
        raise BadRequest("request body must be a JSON object with 'inputs'")
    inputs = payload.get("inputs")
    # typed as object: pysimdjson's stub says an Array's items are Arrays
    tensor: object = inputs[0] if isinstance(inputs, simdjson.Array) and len(inputs) == 1 else None
    if not isinstance(tensor, simdjson.Object):
        raise BadRequest(f"'inputs' must be a list of exactly one tensor named {model.input_name!r}")
    if tensor.get("name") != model.input_name:
        raise BadRequest(f"unknown input {tensor.get('name')!r}; this model takes {model.input_name!r}")
    if tensor.get("datatype") != DATATYPE:
        raise BadRequest(f"input datatype must be {DATATYPE}, got {tensor.get('datatype')!r}")
    raw_shape = tensor.get("shape")
    shape: Any = raw_shape.as_list() if isinstance(raw_shape, simdjson.Array) else raw_shape
    width = model.n_features
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(v) is int for v in shape)
        or shape[0] < 1
        or shape[1] != width
    ):
        raise BadRequest(f"input shape must be [N, {width}] with N >= 1, got {shape!r}")
    if shape[0] > max_rows:
        raise BadRequest(f"batch of {shape[0]} rows exceeds the limit of {max_rows}", status=413)
    data = tensor.get("data")
    if not isinstance(data, simdjson.Array):
        raise BadRequest("input 'data' must be a list of numbers")
    try:
        values = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
    except TypeError:
        raise BadRequest("input 'data' must hold only numbers") from None
    if values.size != shape[0] * width:
        raise BadRequest(f"input 'data' holds {values.size} values; shape {shape} needs {shape[0] * width}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused below
        rows = values.reshape(shape[0], width).astype(np.float32)
    if not np.isfinite(rows).all():
        bad = int(np.argwhere(~np.isfinite(rows))[0][0])
        raise BadRequest(f"input row {bad} holds NaN, infinity or a value beyond float32")
    request_id = payload.get("id")
    return rows, request_id if isinstance(request_id, str) else None


async def read_body(receive: Receive, limit: int, timeout: float) -> bytes | None:
    """The whole request body, or None if the client went away; 413 as soon as it passes `limit`, 408 if
    it has not all come within `timeout` seconds (a slow client must not hold its admission slot)."""
    chunks: list[bytes] = []
    size = 0
    more = True
    try:
        async with asyncio.timeout(timeout):
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return None
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BadRequest(f"request body exceeds the limit of {limit} bytes", status=413)
                chunks.append(chunk)
                more = message.get("more_body", False)
    except TimeoutError:
        raise BadRequest(f"request body not received within the limit of {timeout:g} s", status=408) from None
    return b"".join(chunks)


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length (the server has checked it is a number), or None if chunked."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value)
    return None


INFER_PATH: Final = re.compile(r"^/v2/models/([^/]+)/infer$")
FORECAST_PATH: Final = "/v1/forecast"
# A scoring handler: (scope, body) -> the 200 answer's bytes; every refusal is a `BadRequest`.
Work = Callable[[Scope, bytes], Awaitable[bytes]]


@dataclass(frozen=True)
class ScoringRoute:
    """A POST route served as plain ASGI: its FastAPI declaration (OpenAPI, 405s), what it checks before
    the body, and its work."""

    route: APIRoute
    # before the body: the refusals that need none (unknown model, no model yet, a full model queue),
    # then the largest body the request may send
    before_body: Callable[[Scope], int]
    work: Work


class ScoringPaths:
    """Sends POSTs to the scoring routes straight to their handlers, past Starlette's exception and routing
    layers (which cost as much as scoring a small batch), through admission control.

    Inside the observability middleware (which still counts, times and logs them, by the same route
    template); everything else, probes and /metrics included, takes the ordinary FastAPI path and is never
    refused for load.
    """

    def __init__(
        self,
        app: Any,
        infer: ScoringRoute,
        forecast: ScoringRoute,
        admission: Admission,
        metrics: Metrics,
        body_timeout: float,
    ) -> None:
        self.app = app
        self.infer = infer
        self.forecast = forecast
        self.admission = admission
        self.body_timeout = body_timeout
        self.rejected = {reason: metrics.rejected.labels(reason) for reason in REASONS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            if scope["path"] == FORECAST_PATH:
                scope["route"] = self.forecast.route
                await self.serve(self.forecast, scope, receive, send)
                return
            match = INFER_PATH.match(scope["path"])
            if match is not None:
                scope["route"] = self.infer.route
                scope["path_params"] = {"name": match.group(1)}
                await self.serve(self.infer, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def serve(self, scoring: ScoringRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """Bound, admit, read, work, answer; errors answer exactly as the `BadRequest` handler does."""
        status = 200
        try:
            limit = scoring.before_body(scope)
            declared = declared_length(scope)
            if declared is not None and declared > limit:
                raise BadRequest(
                    f"request body of {declared} bytes exceeds the limit of {limit} bytes", status=413
                )
            with self.admission.admit(limit if declared is None else declared):
                body = await read_body(receive, limit, self.body_timeout)
                if body is None:
                    return  # the client went away
                answer = await scoring.work(scope, body)
        except Overloaded as exc:
            self.rejected[exc.reason].inc()
            status, answer = 503, error_body(str(exc))
        except BadRequest as exc:
            status, answer = exc.status, error_body(str(exc))
        headers = [(b"content-type", JSON_TYPE_BYTES), (b"content-length", b"%d" % len(answer))]
        headers += [(k.encode(), v.encode()) for k, v in _retry_headers(status).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def create_app(
    model_dir: Path,
    *,
    limits: Limits = Limits(),  # noqa: B008 - frozen
    coalesce_rows: int = COALESCE_ROWS,
    intra_op_threads: int = 1,
    access_log: bool = True,
    drift: bool = True,
) -> FastAPI:
    metrics = Metrics()
    state = ModelState()
    metrics.registry.register(DriftCollector(lambda: state.drift))
    admission = Admission(limits.max_concurrency, limits.max_inflight_bytes)
    # forecasts parse and build features off the event loop, on threads of their own (made per lifespan);
    # admitted forecasts beyond their number wait for one, holding only their bodies (admission counts them)
    forecast_threads: ThreadPoolExecutor | None = None

    def load() -> None:
        try:
            model = load_model(model_dir, intra_op_threads)
            metrics.load_seconds.set(model.load_seconds)
            limits.check_model(model.manifest)
            deviation = model.self_check()
        except Exception as exc:
            state.error = f"model not served: {exc}"
            metrics.state.state("failed")
            logger.error(
                "model self-check failed", extra={"fields": {"model_dir": str(model_dir), "error": str(exc)}}
            )
        else:
            manifest = model.manifest
            metrics.golden_deviation.set(deviation)
            metrics.info.info({"name": manifest.name, "version": manifest.version, "sha256": manifest.sha256})
            state.batcher = Batcher(
                model.predict_all,
                coalesce_rows,
                OFFLOAD_ROWS,
                limits.max_queue_rows,
                metrics.batch_rows.observe,
            )
            state.drift = drift_sketch(model)
            state.model = model
            metrics.state.state("ready")
            logger.info(
                "model ready",
                extra={
                    "fields": {
                        "model": manifest.name,
                        "model_version": manifest.version,
                        "sha256": manifest.sha256,
                        "load_seconds": round(model.load_seconds, 4),
                        "golden_max_deviation": deviation,
                    }
                },
            )

    def drift_sketch(model: LoadedModel) -> RollingSketch | None:
        """The model's drift sketch, or None (said once in the log) when drift is not reported."""
        reference = model.manifest.drift_reference
        if drift and reference is not None:
            return RollingSketch(Bins(reference, model.manifest.features.names))
        reason = (
            "the manifest has no drift_reference (a model trained before drift monitoring)"
            if drift
            else "turned off (--no-drift)"
        )
        logger.info("input drift not reported", extra={"fields": {"reason": reason}})
        return None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal forecast_threads
        forecast_threads = ThreadPoolExecutor(limits.max_concurrent_forecasts, thread_name_prefix="forecast")
        task = asyncio.create_task(asyncio.to_thread(load))  # live at once, ready after the self-check
        yield
        await task
        if state.batcher is not None:
            state.batcher.close()
        forecast_threads.shutdown(wait=True)

    app = FastAPI(
        title="retail-forecast scoring service",
        version=__version__,
        lifespan=lifespan,
        description="Open Inference Protocol v2 for the ONNX demand model, and a domain forecast API.",
    )
    app.state.model_state = state
    app.state.metrics = metrics

    def ready_model() -> LoadedModel:
        model = state.model
        if model is None:
            raise BadRequest(state.error or "model is loading", status=503)
        return model

    def served(name: str) -> LoadedModel:
        model = ready_model()
        if name != model.manifest.name:
            raise BadRequest(
                f"unknown model {name!r}; this server serves {model.manifest.name!r}", status=404
            )
        return model

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> Response:
        return _error(str(exc), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        response = _error(str(exc.detail), exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)  # keeps Allow on a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        refusal = invalid_request(exc.errors(), skip=1)
        return _error(str(refusal), refusal.status)

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"], responses={503: {"description": "not ready (yet)"}})
    async def ready() -> Response:
        if state.model is None:
            return _json({"ready": False, "reason": state.error or "model is loading"}, 503)
        if state.stopping:
            return _json({"ready": False, "reason": "shutting down"}, 503)
        return _json({"ready": True})

    @app.get("/v2", tags=["v2"])
    async def server_metadata() -> dict[str, Any]:
        return {"name": "retail-forecast", "version": __version__, "extensions": []}

    @app.get("/v2/models/{name}", tags=["v2"], responses={404: {"description": "unknown model"}})
    async def model_metadata(name: str) -> Response:
        model = served(name)
        manifest = model.manifest
        return _json(
            {
                "name": manifest.name,
                "versions": [manifest.version],
                "platform": "onnxruntime_onnx",
                "inputs": [{"name": model.input_name, "datatype": DATATYPE, "shape": [-1, model.n_features]}],
                "outputs": [
                    {"name": name, "datatype": DATATYPE, "shape": [-1]} for name in model.output_names
                ],
                "parameters": {
                    "sha256": manifest.sha256,
                    "features": manifest.features.names,
                    "freq": manifest.freq,
                    "horizon": manifest.horizon,
                    "min_history": manifest.min_history,
                    # which output holds which quantile level (none for a point-only model)
                    "quantiles": dict(zip(model.quantile_outputs, model.quantile_levels, strict=True)),
                },
            }
        )

    @app.get("/v2/models/{name}/ready", tags=["v2"], responses={404: {"description": "unknown model"}})
    async def model_ready(name: str) -> Response:
        model = served(name)
        return _json({"name": model.manifest.name, "ready": True})

    busy: dict[int | str, dict[str, Any]] = {
        503: {"description": "no model yet, or the server is full: retry after Retry-After seconds"}
    }

    @app.post(
        "/v2/models/{name}/infer",
        tags=["v2"],
        openapi_extra={
            "requestBody": {"required": True, "content": {JSON_TYPE: {"schema": INFER_REQUEST_SCHEMA}}}
        },
        responses={
            400: {"description": "bad input"},
            404: {"description": "unknown model"},
            408: {"description": f"the body not received within {limits.body_timeout_seconds:g} s"},
            413: {"description": f"more than {limits.max_batch_rows} rows, or a body too large for them"},
            **busy,
        },
    )
    async def infer(name: str, request: Request) -> Response:
        """Declares the route (OpenAPI, 405 for other methods); `ScoringPaths` serves its POSTs."""
        raise AssertionError("ScoringPaths serves every POST to this route")  # pragma: no cover

    v2_rows = metrics.rows.labels("v2")

    def before_infer_body(scope: Scope) -> int:
        model = served(scope["path_params"]["name"])
        assert state.batcher is not None  # set before the model: a served model has one
        state.batcher.check_room()
        return limits.infer_body_bytes(model.n_features)

    async def score(scope: Scope, body: bytes) -> bytes:
        model = served(scope["path_params"]["name"])
        batcher = state.batcher
        assert batcher is not None  # set before the model: a served model has one
        rows, request_id = parse_infer(body, model, limits.max_batch_rows)
        predictions = await batcher.predict(rows)
        v2_rows.inc(len(rows))
        if state.drift is not None:
            state.drift.observe(rows)
        manifest = model.manifest
        response: dict[str, Any] = {
            "model_name": manifest.name,
            "model_version": manifest.version,
            "outputs": [
                {
                    "name": name,
                    "datatype": DATATYPE,
                    "shape": [len(rows)],
                    "data": np.ascontiguousarray(predictions[:, k]),
                }
                for k, name in enumerate(model.output_names)
            ],
        }
        if request_id is not None:
            response["id"] = request_id
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    forecast_request = request_model(limits)
    forecast_rows = metrics.rows.labels("forecast")

    async def forecast_route(body: ForecastRequest) -> Response:
        """Declares the route (OpenAPI, 405 for other methods); `ScoringPaths` serves its POSTs."""
        raise AssertionError("ScoringPaths serves every POST to this route")  # pragma: no cover

    forecast_route.__annotations__["body"] = forecast_request  # this server's limits, in the schema
    app.post(
        FORECAST_PATH,
        tags=["forecast"],
        response_model=ForecastResponse,
        responses={
            408: {"description": f"the body not received within {limits.body_timeout_seconds:g} s"},
            413: {"description": f"a body over {limits.max_forecast_bytes} bytes, or a list over its limit"},
            422: {"description": "a series the model cannot forecast"},
            **busy,
        },
    )(forecast_route)

    def before_forecast_body(_: Scope) -> int:
        ready_model()
        return limits.max_forecast_bytes

    def forecast_answer(model: LoadedModel, body: bytes) -> bytes:
        """Parse and forecast: pandas and feature building take milliseconds per series, so this runs on
        a forecast thread while the event loop answers v2 requests and probes."""
        try:
            request = forecast_request.model_validate_json(body)
        except ValidationError as exc:
            raise invalid_request(exc.errors(include_url=False, include_input=False)) from None
        try:
            observe = None if state.drift is None else state.drift.observe
            result = forecast(model, request, limits.max_history_periods, observe)
        except (ForecastInputError, DataError) as exc:
            raise BadRequest(str(exc), status=422) from None
        forecast_rows.inc(sum(len(s.points) for s in result.forecasts))
        return result.model_dump_json(exclude_none=True).encode()  # no "quantiles" from a point-only model

    async def forecast_work(_: Scope, body: bytes) -> bytes:
        model = ready_model()
        assert forecast_threads is not None  # made at startup, before any request
        return await asyncio.get_running_loop().run_in_executor(
            forecast_threads, forecast_answer, model, body
        )

    @app.get("/metrics", tags=["metrics"], include_in_schema=True)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = {r.endpoint: r for r in app.router.routes if isinstance(r, APIRoute)}
    app.add_middleware(
        ScoringPaths,
        infer=ScoringRoute(routes[infer], before_infer_body, score),
        forecast=ScoringRoute(routes[forecast_route], before_forecast_body, forecast_work),
        admission=admission,
        metrics=metrics,
        body_timeout=limits.body_timeout_seconds,
    )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=access_log)
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = without_validation_errors(generated())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


VALIDATION_ERROR_REF: Final = "#/components/schemas/HTTPValidationError"


def without_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 `{"detail": …}` on every route with parameters or a body; this service never
    answers that shape (its refusals are `{"error": …}`, declared per route), so the schema drops it."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") == VALIDATION_ERROR_REF:
                del responses["422"]
    components = schema.get("components", {}).get("schemas", {})
    if VALIDATION_ERROR_REF not in orjson.dumps(schema.get("paths", {})).decode():
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema

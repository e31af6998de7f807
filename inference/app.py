"""The scoring service: Open Inference Protocol v2 for the raw model, and the domain forecast API.

The v2 infer route is plain ASGI on the hot path, where HTTP and JSON, not the model, are the cost: it
reads the body with simdjson, scores through the batcher (requests that wait together run together)
and answers with orjson bytes. Everything else uses ordinary FastAPI models.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from retail_forecast import __version__
from retail_forecast.core.schema import DataError
from retail_forecast.inference.batching import COALESCE_ROWS, OFFLOAD_ROWS, Batcher
from retail_forecast.inference.forecast import ForecastInputError, ForecastRequest, ForecastResponse, forecast
from retail_forecast.inference.model import LoadedModel, load_model
from retail_forecast.inference.observability import (
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
# An infer body may take this many bytes per value of its largest allowed batch: a float printed at full
# precision with its separator ("-1.2345678901234567e-05, ") takes 25.
JSON_BYTES_PER_VALUE: Final = 32
DATATYPE: Final = "FP32"


@dataclass
class ModelState:
    """What readiness reports: a model that loaded and passed its self-check, or why not (yet)."""

    model: LoadedModel | None = None
    batcher: Batcher | None = None
    error: str | None = None
    stopping: bool = False  # SIGTERM: still serving, no longer ready

    def stop(self) -> None:
        self.stopping = True


class BadRequest(Exception):  # noqa: N818 - an HTTP outcome, not a programming error
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(message: str, status: int) -> Response:
    return Response(error_body(message), status_code=status, media_type=JSON_TYPE)


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


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None if the client went away; 413 as soon as it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    more = True
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
    return b"".join(chunks)


INFER_PATH: Final = re.compile(r"^/v2/models/([^/]+)/infer$")


class InferFastPath:
    """Sends v2 infer requests straight to their handler, past Starlette's exception and routing layers.

    Inside the observability middleware (which still counts, times and logs them, by the same route
    template); everything else takes the ordinary FastAPI path.
    """

    def __init__(self, app: Any, route: APIRoute, handler: Any) -> None:
        self.app = app
        self.route = route
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = INFER_PATH.match(scope["path"])
            if match is not None:
                scope["route"] = self.route
                scope["path_params"] = {"name": match.group(1)}
                await self.handler(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    model_dir: Path,
    *,
    max_batch_rows: int = 8192,
    coalesce_rows: int = COALESCE_ROWS,
    max_forecast_series: int = 1000,
    intra_op_threads: int = 1,
    access_log: bool = True,
) -> FastAPI:
    metrics = Metrics()
    state = ModelState()

    def load() -> None:
        try:
            model = load_model(model_dir, intra_op_threads)
            metrics.load_seconds.set(model.load_seconds)
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
            state.batcher = Batcher(model.predict, coalesce_rows, OFFLOAD_ROWS, metrics.batch_rows.observe)
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(asyncio.to_thread(load))  # live at once, ready after the self-check
        yield
        await task
        if state.batcher is not None:
            state.batcher.close()

    app = FastAPI(
        title="retail-forecast scoring service",
        version=__version__,
        lifespan=lifespan,
        description="Open Inference Protocol v2 for the ONNX demand model, and a domain forecast API.",
    )
    app.state.model_state = state
    app.state.metrics = metrics

    def served(name: str) -> LoadedModel:
        model = state.model
        if model is None:
            raise BadRequest(state.error or "model is loading", status=503)
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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}" for err in exc.errors()
        )
        return _error(problems, 422)

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
                "outputs": [{"name": model.output_name, "datatype": DATATYPE, "shape": [-1]}],
                "parameters": {
                    "sha256": manifest.sha256,
                    "features": manifest.features.names,
                    "freq": manifest.freq,
                    "horizon": manifest.horizon,
                    "min_history": manifest.min_history,
                },
            }
        )

    @app.get("/v2/models/{name}/ready", tags=["v2"], responses={404: {"description": "unknown model"}})
    async def model_ready(name: str) -> Response:
        model = served(name)
        return _json({"name": model.manifest.name, "ready": True})

    @app.post(
        "/v2/models/{name}/infer",
        tags=["v2"],
        openapi_extra={
            "requestBody": {"required": True, "content": {JSON_TYPE: {"schema": INFER_REQUEST_SCHEMA}}}
        },
        responses={
            400: {"description": "bad input"},
            404: {"description": "unknown model"},
            413: {"description": "batch too large"},
        },
    )
    async def infer(name: str, request: Request) -> Response:
        """Declares the route (OpenAPI, 405 for other methods); `InferFastPath` serves its POSTs."""
        raise AssertionError("InferFastPath serves every POST to this route")  # pragma: no cover

    v2_rows = metrics.rows.labels("v2")

    async def score(name: str, body: bytes) -> bytes:
        """The infer response body for a request body; every refusal is a `BadRequest`."""
        model = served(name)
        batcher = state.batcher
        assert batcher is not None  # set before the model: a served model has one
        rows, request_id = parse_infer(body, model, max_batch_rows)
        predictions = await batcher.predict(rows)
        v2_rows.inc(len(rows))
        manifest = model.manifest
        response: dict[str, Any] = {
            "model_name": manifest.name,
            "model_version": manifest.version,
            "outputs": [
                {"name": model.output_name, "datatype": DATATYPE, "shape": [len(rows)], "data": predictions}
            ],
        }
        if request_id is not None:
            response["id"] = request_id
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    async def infer_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        """Infer as plain ASGI, without FastAPI's per-request machinery (dependency solving, exception
        wrapping, response objects), which costs as much as scoring a small batch. Errors answer exactly
        as the `BadRequest` handler does."""
        status = 200
        try:
            body = await read_body(receive, body_limit())
            if body is None:
                return  # the client went away
            answer = await score(scope["path_params"]["name"], body)
        except BadRequest as exc:
            status, answer = exc.status, error_body(str(exc))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", JSON_TYPE_BYTES), (b"content-length", b"%d" % len(answer))],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    def body_limit() -> int:
        """Bytes an infer body may take: generous JSON for the largest batch the limit allows."""
        model = state.model
        width = model.n_features if model is not None else 1
        return max_batch_rows * width * JSON_BYTES_PER_VALUE + 65536

    (infer_route,) = [r for r in app.router.routes if isinstance(r, APIRoute) and r.endpoint is infer]

    @app.post(
        "/v1/forecast",
        tags=["forecast"],
        response_model=ForecastResponse,
        responses={422: {"description": "a series the model cannot forecast"}},
    )
    async def forecast_route(body: ForecastRequest) -> Response:
        model = state.model
        if model is None:
            raise BadRequest(state.error or "model is loading", status=503)
        if len(body.series) > max_forecast_series:
            raise BadRequest(
                f"{len(body.series)} series exceed the limit of {max_forecast_series}", status=413
            )
        try:
            # pandas and feature building take milliseconds per series: off the event loop, so v2
            # requests and probes are answered meanwhile
            result = await asyncio.to_thread(forecast, model, body)
        except (ForecastInputError, DataError) as exc:
            raise BadRequest(str(exc), status=422) from None
        metrics.rows.labels("forecast").inc(sum(len(s.points) for s in result.forecasts))
        return Response(result.model_dump_json(), media_type=JSON_TYPE)

    @app.get("/metrics", tags=["metrics"], include_in_schema=True)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(InferFastPath, route=infer_route, handler=infer_asgi)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=access_log)
    return app

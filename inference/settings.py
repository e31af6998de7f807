"""Serving settings: CLI flags override environment variables (FORECAST_*), which override defaults."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Final

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from retail_forecast.inference.batching import COALESCE_ROWS
from retail_forecast.inference.limits import Limits

DEFAULT: Final = Limits()


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FORECAST_", extra="forbid", protected_namespaces=())

    model_dir: Path | None = Field(None, description="a local model folder (model.onnx + manifest.json)")
    model_uri: str | None = Field(None, description="model store URI to fetch from (file:// or azureblob://)")
    model_name: str | None = None
    model_version: str | None = None
    model_sha256: str | None = Field(None, description="refuse the model unless its digest is this")
    fetch_dir: Path = Field(Path("/tmp/forecast-model"), description="where a fetched model is kept")
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    # What one request may cost (413/422 beyond), then how much the server takes on at once (503 beyond):
    # README's limits table; `limits()` hands them to the app.
    max_batch_rows: int = Field(
        DEFAULT.max_batch_rows, ge=1, description="largest [N, F] batch one infer request may carry"
    )
    max_forecast_series: int = Field(
        DEFAULT.max_forecast_series, ge=1, description="most series one /v1/forecast request may carry"
    )
    max_history_periods: int = Field(
        DEFAULT.max_history_periods,
        ge=1,
        description="most periods a /v1/forecast history may span, per series and for all series together",
    )
    max_forecast_bytes: int = Field(
        DEFAULT.max_forecast_bytes, ge=1, description="largest /v1/forecast body, refused while it is read"
    )
    body_timeout_seconds: float = Field(
        DEFAULT.body_timeout_seconds,
        gt=0,
        description="seconds a client may take to send a scoring request's body (408 beyond)",
    )
    max_concurrency: int = Field(
        DEFAULT.max_concurrency,
        ge=1,
        description="scoring requests served at once (v2 infer and /v1/forecast)",
    )
    max_inflight_bytes: int = Field(
        DEFAULT.max_inflight_bytes,
        ge=1,
        description="request body bytes those may hold at once, reserved from their Content-Length",
    )
    max_concurrent_forecasts: int = Field(
        DEFAULT.max_concurrent_forecasts,
        ge=1,
        description="/v1/forecast requests parsed and computed at once (threads); more wait for one",
    )
    max_queue_rows: int = Field(
        DEFAULT.max_queue_rows, ge=1, description="feature rows that may wait for the model"
    )
    coalesce_rows: int = Field(
        COALESCE_ROWS,
        ge=1,
        description="requests waiting for the model are scored together up to this many rows",
    )
    intra_op_threads: int = Field(1, ge=1, description="onnxruntime threads per request")
    log_level: str = "info"
    access_log: bool = Field(True, description="one JSON log line per request")
    drift: bool = Field(True, description="report input drift against the manifest's feature reference")
    shutdown_delay_seconds: int = Field(
        5, ge=0, description="after SIGTERM, serve this long with readiness false before closing the listener"
    )
    graceful_shutdown_seconds: int = Field(
        20, ge=0, description="then wait this long at most for in-flight requests"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ServeSettings:
        if (self.model_dir is None) == (self.model_uri is None):
            raise ValueError("give exactly one of --model-dir or --model-uri")
        if self.model_uri is not None and not (self.model_name and self.model_version):
            raise ValueError("--model-uri needs --name and --version")
        return self

    def limits(self) -> Limits:
        return Limits(**{field.name: getattr(self, field.name) for field in fields(Limits)})

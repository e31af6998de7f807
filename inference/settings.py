"""Serving settings: CLI flags override environment variables (FORECAST_*), which override defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from retail_forecast.inference.batching import COALESCE_ROWS


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
    max_batch_rows: int = Field(8192, ge=1, description="largest [N, F] batch one infer request may carry")
    max_forecast_series: int = Field(1000, ge=1, description="most series one /v1/forecast request may carry")
    coalesce_rows: int = Field(
        COALESCE_ROWS,
        ge=1,
        description="requests waiting for the model are scored together up to this many rows",
    )
    intra_op_threads: int = Field(1, ge=1, description="onnxruntime threads per request")
    log_level: str = "info"
    access_log: bool = Field(True, description="one JSON log line per request")
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

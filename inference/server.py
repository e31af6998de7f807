"""`forecast serve`: fetch (if asked), then run the app under uvicorn with graceful shutdown."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from retail_forecast.core.store import open_store
from retail_forecast.inference.app import create_app
from retail_forecast.inference.observability import configure_logging
from retail_forecast.inference.settings import ServeSettings

logger = logging.getLogger("retail_forecast.inference")


def resolve_model_dir(settings: ServeSettings) -> Path:
    """A local folder as given, or a store version fetched and sha256-verified before anything loads."""
    if settings.model_dir is not None:
        return settings.model_dir
    assert settings.model_uri and settings.model_name and settings.model_version  # checked by settings
    dest = settings.fetch_dir / settings.model_name / settings.model_version
    manifest = open_store(settings.model_uri).fetch(
        settings.model_name, settings.model_version, dest, settings.model_sha256
    )
    logger.info(
        "model fetched",
        extra={
            "fields": {
                "uri": settings.model_uri,
                "model": manifest.name,
                "model_version": manifest.version,
                "sha256": manifest.sha256,
            }
        },
    )
    return dest


def serve(settings: ServeSettings) -> None:
    configure_logging(settings.log_level)
    app = create_app(
        resolve_model_dir(settings),
        max_batch_rows=settings.max_batch_rows,
        max_forecast_series=settings.max_forecast_series,
        intra_op_threads=settings.intra_op_threads,
        access_log=settings.access_log,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        server_header=False,
    )

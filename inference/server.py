"""`forecast serve`: fetch (if asked), then run the app under uvicorn with graceful shutdown."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE  # its exit code when it cannot start (port taken)

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


class _Drained(Exception):  # noqa: N818 - a clean stop, not a failure
    """uvicorn has drained in-flight requests after SIGTERM and re-raised the signal to us."""


def _drained(signum: int, frame: FrameType | None) -> None:
    # Stopping already: a repeated SIGTERM (a supervisor, a test) must not cut the interpreter's
    # teardown short and turn exit 0 into 143.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Drained


class _Server(uvicorn.Server):
    """uvicorn with a shutdown delay: the first SIGTERM turns readiness false but keeps serving for
    `delay` seconds before uvicorn's graceful shutdown closes the listener.

    Kubernetes takes a terminating pod out of its Service's endpoints while the pod already has its
    SIGTERM; until every node's proxy has caught up, new connections still arrive, and a closed
    listener would refuse them. A second SIGTERM, or SIGINT, shuts down at once.
    """

    def __init__(self, config: uvicorn.Config, delay: float, on_stopping: Callable[[], None]) -> None:
        super().__init__(config)
        self._delay = delay
        self._on_stopping = on_stopping
        self._close_at: float | None = None
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._delay > 0 and self._close_at is None:
            self._close_at = time.monotonic() + self._delay
            self._on_stopping()  # a flag only: this runs in a signal handler
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._close_at is not None:
            if not self._announced:  # here, not in the signal handler, which may interrupt logging
                self._announced = True
                logger.info(
                    "SIGTERM: not ready, closing the listener after the shutdown delay",
                    extra={"fields": {"shutdown_delay_seconds": self._delay}},
                )
            if not self.should_exit and time.monotonic() >= self._close_at:
                super().handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)


def serve(settings: ServeSettings) -> None:
    configure_logging(settings.log_level)
    app = create_app(
        resolve_model_dir(settings),
        limits=settings.limits(),
        coalesce_rows=settings.coalesce_rows,
        intra_op_threads=settings.intra_op_threads,
        access_log=settings.access_log,
        drift=settings.drift,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        server_header=False,
        # nothing here reads the client address or scheme that X-Forwarded-* would rewrite
        proxy_headers=False,
    )
    server = _Server(config, settings.shutdown_delay_seconds, app.state.model_state.stop)
    # On SIGTERM uvicorn stops accepting, lets in-flight requests finish (up to the graceful timeout), runs
    # the lifespan shutdown and then re-raises the signal under the handler that was installed before it.
    # With the default handler that kills the process (exit -15 / 143) after a perfectly clean drain; this
    # handler turns it into a normal return, so a graceful stop exits 0 as Kubernetes expects.
    previous = signal.signal(signal.SIGTERM, _drained)
    drained = False
    try:
        server.run()
    except _Drained:
        drained = True
        logger.info("stopped after draining in-flight requests")
    finally:
        if not drained:  # after a drain SIGTERM stays ignored (see _drained)
            signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)

"""When the handlers reconcile (operator/src/handlers.py): a reconcile that raises is tried again later."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from retail_forecast.operator import handlers
from retail_forecast.operator.failures import PERMANENT_FIRST_SECONDS


def test_a_reconcile_that_raises_is_retried_with_a_growing_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No client can be built (the kubeconfig went missing): no watch event may come to save the object,
    so the handler schedules the retry itself, backing off like any permanent failure."""
    for variable in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setattr(handlers, "_timers", {})  # this test's own handler state
    monkeypatch.setattr(handlers, "_raised", {})
    monkeypatch.setattr(handlers, "_turns", {})
    monkeypatch.setattr(handlers, "_state", {})
    key = ("shop", "demand")

    async def raise_twice() -> list[float]:
        loop = asyncio.get_running_loop()
        handlers.use_context(None)
        delays = []
        try:
            for _ in range(2):
                await handlers._reconcile_in_turn(*key)
                delays.append(handlers._timers[key].when() - loop.time())
        finally:
            handlers._reconcile_later(*key, None)  # the pending retry, cancelled
        return delays

    first, second = asyncio.run(raise_twice())
    assert first == pytest.approx(PERMANENT_FIRST_SECONDS, abs=1)
    assert second == pytest.approx(2 * PERMANENT_FIRST_SECONDS, abs=1)
    assert handlers._turns == {}  # a finished turn keeps no lock: the operator's state does not grow


def test_a_deleted_forecast_model_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its pending retry is cancelled and its failure count dropped: nothing is kept per deleted object."""
    monkeypatch.setattr(handlers, "_timers", {})
    monkeypatch.setattr(handlers, "_raised", {("shop", "demand"): 3})

    async def delete() -> None:  # timers need a running loop
        handlers._reconcile_later("shop", "demand", 600.0)
        handlers._forget("shop", "demand")

    asyncio.run(delete())
    assert (handlers._timers, handlers._raised) == ({}, {})

"""Operator integration-test fixtures: an in-process Kubernetes API emulator (tests/operator/kube.py).

Async tests and fixtures run under pytest-asyncio (strict mode: mark tests with ``@pytest.mark.asyncio``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.operator.kube import ApiServer, serve


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[ApiServer]:
    """A fresh API server on 127.0.0.1 (free port) with the built-in kinds and the ForecastModel CRD."""
    async with serve() as api:
        yield api

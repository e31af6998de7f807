"""`forecast operator`: run the kopf operator (handlers in `handlers.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


def run(
    *,
    namespaces: Sequence[str],
    peering: str | None,
    liveness: str | None,
    priority: int = 0,
) -> None:
    """Watch `namespaces` (all when empty). With a peering name, replicas elect one active operator."""
    import kopf  # noqa: PLC0415 - only the operator needs kopf

    from retail_forecast.operator import handlers  # noqa: F401, PLC0415 - registers the handlers

    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=peering is None,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=liveness,
        )
    )

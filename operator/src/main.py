"""`forecast operator`: run the kopf operator (handlers in `handlers.py`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence


def run(
    *,
    namespaces: Sequence[str],
    peering: str | None,
    liveness: str | None,
    priority: int | None = None,
    context: str | None = None,
) -> None:
    """Watch `namespaces` (all when empty). With a peering name, replicas elect one active operator.

    Peers of equal priority all pause (kopf), and a Deployment's replicas share their arguments: without
    an explicit priority each replica draws its own. The credentials are checked once before kopf starts
    (raising NoKubernetesApi), so a missing cluster is an error, not a login loop.
    """
    import kopf  # noqa: PLC0415 - only the operator needs kopf

    from retail_forecast.operator import handlers  # noqa: PLC0415 - registers the handlers
    from retail_forecast.operator.kube import load_configuration  # noqa: PLC0415

    load_configuration(context)
    handlers.use_context(context)

    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=peering is None,
            peering_name=peering,
            priority=priority if priority is not None else random.SystemRandom().randint(1, 1_000_000),
            liveness_endpoint=liveness,
        )
    )

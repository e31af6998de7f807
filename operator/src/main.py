"""`forecast operator`: run the kopf operator (handlers in `handlers.py`)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence


def run(
    *,
    namespaces: Sequence[str],
    peering: str | None,
    liveness: str | None,
    priority: int | None = None,
    context: str | None = None,
    log_format: str = "json",
    verbose: bool = False,
) -> None:
    """Watch `namespaces` (all when empty). With a peering name, replicas elect one active operator.

    Logs go to stderr as kopf formats them: by default one JSON object a line, at INFO.
    Peers of equal priority all pause (kopf), and a Deployment's replicas share their arguments: without
    an explicit priority each replica draws its own. The credentials are checked once before kopf starts
    (raising NoKubernetesApi), so a missing cluster is an error, not a login loop.
    """
    import kopf  # noqa: PLC0415 - only the operator needs kopf

    from retail_forecast.operator import handlers  # noqa: PLC0415 - registers the handlers
    from retail_forecast.operator.kube import load_configuration  # noqa: PLC0415

    # As `kopf run --log-format=…` does: kopf's own formatters on the root logger, INFO by default.
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat[log_format.upper()])
    # The storage SDK logs every request and response at INFO: its failures reach our own lines.
    logging.getLogger("azure").setLevel(logging.DEBUG if verbose else logging.WARNING)
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

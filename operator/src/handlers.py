"""kopf handlers: thin. They only decide *when* to reconcile; `reconcile.py` decides *what*.

No handler keeps progress in the resource and none needs a finalizer: child objects carry owner
references, so deleting a ForecastModel lets the garbage collector remove them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final, cast

import kopf

from retail_forecast.operator import resources as res
from retail_forecast.operator.kube import Credentials, Kube
from retail_forecast.operator.reconcile import Reconciler, TransientError
from retail_forecast.operator.rollout import Event

SWEEP_SECONDS: Final = 5.0
logger = logging.getLogger("retail_forecast.operator")
_state: dict[str, Any] = {}


def _emit(body: dict[str, Any], event: Event) -> None:
    kopf.event(cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message)


def reconciler() -> Reconciler:
    found = _state.get("reconciler")
    if found is None:
        found = _state["reconciler"] = Reconciler(Kube(Credentials.discover()), _emit)
    assert isinstance(found, Reconciler)
    return found


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    credentials = Credentials.discover()
    return kopf.ConnectionInfo(
        server=credentials.server,
        token=credentials.token,
        ca_path=credentials.ca_file,
        insecure=credentials.insecure,
        scheme="Bearer" if credentials.token else None,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    _state["sweeper"] = asyncio.create_task(_sweep())


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    sweeper = _state.pop("sweeper", None)
    if sweeper is not None:
        sweeper.cancel()
    found = _state.pop("reconciler", None)
    if isinstance(found, Reconciler):
        await found.kube.close()


async def _reconcile(namespace: str, name: str) -> None:
    try:
        await reconciler().reconcile(namespace, name)
    except TransientError as exc:
        logger.warning("will retry %s/%s: %s", namespace, name, exc)


@kopf.on.event(res.GROUP, res.VERSION, res.PLURAL)
async def forecast_model_changed(type: str, namespace: str | None, name: str, **_: Any) -> None:
    if type != "DELETED" and namespace is not None:
        await _reconcile(namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={res.LABEL_MANAGED_BY: res.MANAGER})
async def deployment_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    owner = labels.get(res.LABEL_INSTANCE)
    if owner and namespace is not None:
        await _reconcile(namespace, owner)


async def _sweep() -> None:
    """Deadlines and scale-down delays pass without any watch event: look at every resource regularly."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            found = await reconciler().kube.request("GET", f"/apis/{res.GROUP}/{res.VERSION}/{res.PLURAL}")
        except Exception as exc:  # the API may be briefly unreachable; the next sweep tries again
            logger.warning("sweep failed to list ForecastModels: %s", exc)
            continue
        for item in found.get("items", []):
            meta = item["metadata"]
            await _reconcile(meta["namespace"], meta["name"])

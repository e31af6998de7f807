"""kopf handlers: thin. They only decide *when* to reconcile; `reconcile.py` decides *what*.

Only watch-event handlers: they keep no progress in the resource and need no finalizer (kopf timers
and daemons would add one). Child objects carry owner references, so deleting a ForecastModel lets
the garbage collector remove them. A paused peer gets no events, so it reconciles nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, cast

import kopf
import kubernetes.client

from retail_forecast.operator import resources as res
from retail_forecast.operator.failures import retry_delay, unexpected_failure
from retail_forecast.operator.kube import Kube, authorization, load_configuration
from retail_forecast.operator.reconcile import Reconciler
from retail_forecast.operator.rollout import Event

_state: dict[str, Any] = {}
_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
_tasks: set[asyncio.Task[None]] = set()
_turns: dict[tuple[str, str], asyncio.Lock] = {}
_waiting: set[tuple[str, str]] = set()
_raised: dict[tuple[str, str], int] = {}  # consecutive reconciles that raised, per object
logger = logging.getLogger("retail_forecast.operator")


def _emit(body: dict[str, Any], event: Event) -> None:
    kopf.event(cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message)


def use_context(context: str | None) -> None:
    """The kubeconfig context to run with (`forecast operator --context`); None: in-cluster or current."""
    _state["context"] = context


def reconciler() -> Reconciler:
    found = _state.get("reconciler")
    if found is None:
        configuration = load_configuration(_state.get("context"))
        found = _state["reconciler"] = Reconciler(Kube(configuration, res.MANAGER), _emit)
    assert isinstance(found, Reconciler)
    return found


def connection_info(configuration: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """kopf's view of a `kubernetes` Configuration: the server, TLS, and the Authorization header."""
    header = authorization(configuration)
    scheme, token = header.split(" ", 1) if header and " " in header else (None, header)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """The same credentials as the reconciler's client; kopf asks again after a 401, so a rotated token
    or an expired exec credential is read afresh."""
    return connection_info(load_configuration(_state.get("context")))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for timer in _timers.values():
        timer.cancel()
    _timers.clear()
    _raised.clear()
    found = _state.pop("reconciler", None)
    if isinstance(found, Reconciler):
        await found.kube.close()


def _reconcile_later(namespace: str, name: str, again: float | None) -> None:
    """Replace the object's pending timer: deadlines, scale-down delays and retries pass without a watch
    event. The time is re-derived on every reconcile, so a restarted operator reschedules it from its
    first listing."""
    key = (namespace, name)
    pending = _timers.pop(key, None)
    if pending is not None:
        pending.cancel()
    if again is not None:
        _timers[key] = asyncio.get_running_loop().call_later(again, _reconcile_soon, namespace, name)


def _reconcile_soon(namespace: str, name: str) -> None:
    """Reconcile in the background, once for all the watch events that arrive while one waits its turn.

    kopf hands every event to the handlers, one after another per object, and a reconcile reads
    everything afresh: an event that finds one waiting adds nothing, and the handler returns at once so
    kopf's queue never holds stale events. Before, every event was a full reconcile in turn: 200 new
    ForecastModels left a backlog of about 11 each, worked off for minutes (benchmarks/operator.py).
    """
    key = (namespace, name)
    if key in _waiting:
        return
    _waiting.add(key)
    _spawn(_reconcile_in_turn(namespace, name))


async def _reconcile_in_turn(namespace: str, name: str) -> None:
    key = (namespace, name)
    async with _turns.setdefault(key, asyncio.Lock()):
        _waiting.discard(key)
        try:
            # Failures of the reconcile itself come back as a retry delay (`Reconciler._failed`).
            again = await reconciler().reconcile(namespace, name)
        except Exception as exc:  # no client: no kopf handler around a background task would retry it
            attempt = _raised[key] = _raised.get(key, 0) + 1
            again = retry_delay(unexpected_failure(exc), attempt)
            logger.exception("reconcile %s/%s raised (attempt %d), retry in %.0fs", *key, attempt, again)
        else:
            _raised.pop(key, None)
        _reconcile_later(namespace, name, again)
    if key not in _waiting:  # nobody queued behind this turn: its lock is made afresh when one comes
        _turns.pop(key, None)


def _spawn(coroutine: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


@kopf.on.event(res.GROUP, res.VERSION, res.PLURAL)
async def forecast_model_changed(type: str, namespace: str | None, name: str, **_: Any) -> None:
    if namespace is None:
        return
    if type == "DELETED":  # the garbage collector removes its children
        _forget(namespace, name)
    else:
        _reconcile_soon(namespace, name)


def _forget(namespace: str, name: str) -> None:
    """A deleted object keeps nothing here: its pending timer is cancelled, its failure count dropped."""
    _reconcile_later(namespace, name, None)
    _raised.pop((namespace, name), None)


@kopf.on.event("apps", "v1", "deployments", labels={res.LABEL_MANAGED_BY: res.MANAGER})
async def deployment_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    owner = labels.get(res.LABEL_INSTANCE)
    if owner and namespace is not None:
        _reconcile_soon(namespace, owner)


@kopf.on.event("batch", "v1", "jobs", labels={res.LABEL_MANAGED_BY: res.MANAGER})
async def batch_job_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    """A batch run started or finished: the owner's status shows the last run (`batch.py`)."""
    owner = labels.get(res.LABEL_INSTANCE)
    if owner and namespace is not None:
        _reconcile_soon(namespace, owner)

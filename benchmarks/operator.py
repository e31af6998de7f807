"""The operator at scale: N ForecastModels on a real control plane, and what they cost it.

For each count (default 20 and 200: ten times the resources) one run starts its own etcd +
kube-apiserver + kube-controller-manager on loopback (tests/controlplane.py, with an audit log), applies
the chart's CRDs, ServiceAccount, RBAC and peering objects, and starts `forecast operator` as a process
with the chart's arguments, as the chart's ServiceAccount (a TokenRequest token). All runs verify one
tiny real model published to Azurite. The run creates N ForecastModels while it plays the kubelet (every
pod is marked Running and Ready), and reports:

- time from each ForecastModel's create until its Ready condition is True (p50/p95/max), the time until
  its active Deployment was available (the controllers' share), and the total until all N were Ready;
- the operator's requests while it brought them up (from the audit log, by user): writes and reads per
  ForecastModel;
- how long after the last Ready it still made requests (it works through the watch events of the
  ramp: every event is one reconcile);
- steady state: once it made no request for `--settle` seconds, a window in which it counts the
  operator's write requests (target 0), read requests and watch streams (open, and opened during it);
- the operator process's CPU seconds (idle, the ramp, the window) and RSS (idle, after the window);
- the ratios between the largest and the smallest count.

Nothing here asserts timings: it prints them. The machine's load average is printed with each run, as
timings on a shared machine move with it.

    python -m benchmarks.operator [--counts 20 200] [--window 60] [--settle 10] [--json PATH]

Needs KUBEBUILDER_ASSETS (etcd, kube-apiserver, kube-controller-manager v1.28; `.ci/run` unpacks them
into build/k8s-assets) and Azurite (`npm install --no-save azurite`). Run it from the repository root:
it reuses the test suite's control plane, Azurite, model and operator-process helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import kubernetes.dynamic.exceptions
import psutil

from retail_forecast.operator import resources as res
from tests.azurite import Azurite
from tests.charts.chart import NAMESPACE, crd_objects, operator_args, operator_identity
from tests.controlplane import (
    AuditEntry,
    Client,
    ControlPlane,
    apply_crds,
    create_namespace,
    find_assets,
    mark_selected_pods_ready,
)
from tests.operator.conftest import Store, publish_model
from tests.operator.process import OperatorProcess

FM_API: Final = f"{res.GROUP}/{res.VERSION}"
WORKLOADS: Final = "bench"  # the namespace of the ForecastModels
RELEASE: Final = "forecast-operator"  # the chart's default names: ServiceAccount, peering
OPERATOR_USER: Final = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
WRITES: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READS: Final = frozenset({"get", "list"})
# kopf's peering keep-alive (the chart runs two replicas, one active): a write every
# `settings.peering.lifetime - 10` s whatever the number of resources, counted apart.
PEERING: Final = frozenset({"clusterkopfpeerings", "kopfpeerings"})
POLL_SECONDS: Final = 0.5


def forecast_model(name: str, store: Store) -> dict[str, Any]:
    """One serving pod each (the HPA may add a second): every child kind, the fewest pods to play."""
    return {
        "apiVersion": FM_API,
        "kind": res.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "demand", "version": "1", "storeUri": store.uri},
            "serving": {"image": "registry.local/inference:1"},
            "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2},
        },
    }


# ------------------------------------------------------------------------------------------ measures


@dataclass(frozen=True)
class Usage:
    """The operator process at one moment."""

    cpu_seconds: float
    rss_mib: float

    @classmethod
    def of(cls, pid: int) -> Usage:
        process = psutil.Process(pid)
        times = process.cpu_times()
        return cls(times.user + times.system, process.memory_info().rss / 2**20)


@dataclass
class Requests:
    """What one user asked in a stretch of the audit log."""

    writes: Counter[str] = field(default_factory=Counter)  # "verb resource" -> count
    peering_writes: int = 0
    reads: int = 0
    watches_opened: int = 0
    watches_closed: int = 0
    denied: int = 0

    @property
    def write_count(self) -> int:
        """Writes to ForecastModels, their children and Events: the peering keep-alive left out."""
        return sum(self.writes.values()) - self.peering_writes


def audit_requests(audit_log: Path, user: str, start: int = 0, end: int | None = None) -> Requests:
    """The requests `user` made between byte offsets `start` and `end` of the audit log.

    A request counts when it completes; a watch when its stream opens (ResponseStarted) and closes.
    """
    found = Requests()
    with audit_log.open("rb") as log:
        log.seek(start)
        chunk = log.read() if end is None else log.read(end - start)
    for line in chunk.splitlines():
        event = json.loads(line)
        if event["user"].get("username") != user:
            continue
        entry, stage = AuditEntry.of(event), event["stage"]
        if entry.verb == "watch":
            found.watches_opened += stage == "ResponseStarted"
            found.watches_closed += stage == "ResponseComplete"
        elif stage == "ResponseComplete":
            if entry.code == 403:
                found.denied += 1
            if entry.verb in WRITES:
                found.writes[f"{entry.verb} {entry.resource}"] += 1
                found.peering_writes += entry.resource in PEERING
            elif entry.verb in READS:
                found.reads += 1
    return found


def audit_end(audit_log: Path) -> int:
    """The offset just past the audit log's last complete line (the server may be writing the next)."""
    size = audit_log.stat().st_size
    with audit_log.open("rb") as log:
        start = max(0, size - 2**20)
        log.seek(start)
        return start + log.read(size - start).rfind(b"\n") + 1


def spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


@dataclass
class Run:
    count: int
    load_average: tuple[float, float, float]
    seconds_to_all_ready: float
    ready_seconds: dict[str, float]  # create → Ready, per ForecastModel
    available_seconds: dict[str, float]  # create → its Deployment available
    ramp_writes: dict[str, int]  # "verb resource" -> count, until all were Ready
    ramp_writes_per_model: float
    ramp_reads_per_model: float
    quiet_seconds_after_ready: float  # until the operator's last request before the window
    tail_reads: int  # its read requests in that time
    tail_writes: int
    window_seconds: float
    steady_writes: dict[str, int]  # all of them, the peering keep-alive included
    steady_writes_per_min: float  # the peering keep-alive left out: target 0
    steady_peering_writes_per_min: float
    steady_reads_per_min: float
    watches_open: int
    watches_opened_in_window: int
    denied: int
    cpu_seconds: dict[str, float]  # idle (start-up), ramp, window
    cpu_seconds_per_min_steady: float
    rss_mib: dict[str, float]  # idle, after the window

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_mib["steady"] - self.rss_mib["idle"]


# ---------------------------------------------------------------------------------------------- a run


def play_kubelet(client: Client) -> None:
    # NotFound: a pod deleted between the list and its status write.
    with contextlib.suppress(kubernetes.dynamic.exceptions.NotFoundError):
        mark_selected_pods_ready(client, WORKLOADS)


def create_models(kubeconfig: Path, names: list[str], store: Store, created: dict[str, float]) -> None:
    """Create the ForecastModels one after another, noting when each create was sent."""
    with Client(kubeconfig) as client:
        models = client.resource(FM_API, res.KIND)
        for name in names:
            created[name] = time.monotonic()
            models.create(body=forecast_model(name, store), namespace=WORKLOADS)


def first_seen(client: Client, seen: dict[str, float], available: dict[str, float]) -> None:
    """Note when each ForecastModel is first seen Ready, and each first available Deployment."""
    now = time.monotonic()
    for deployment in client.list("apps/v1", "Deployment", WORKLOADS):
        owner = deployment["metadata"].get("labels", {}).get(res.LABEL_INSTANCE)
        if owner and (deployment.get("status") or {}).get("availableReplicas", 0) >= 1:
            available.setdefault(owner, now)
    for model in client.list(FM_API, res.KIND, WORKLOADS):
        conditions = (model.get("status") or {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            seen.setdefault(model["metadata"]["name"], now)


@contextlib.contextmanager
def operator_on(plane: ControlPlane, store: Store, workdir: Path) -> Iterator[OperatorProcess]:
    """The chart's identity objects applied, and `forecast operator` started as its ServiceAccount."""
    with plane.admin() as admin:
        apply_crds(admin, crd_objects())
        create_namespace(admin, NAMESPACE)
        create_namespace(admin, WORKLOADS)
        admin.apply(operator_identity())
    kubeconfig = plane.token_kubeconfig(workdir / "operator.kubeconfig", NAMESPACE, RELEASE)
    process = OperatorProcess(
        operator_args(),
        {
            "KUBECONFIG": str(kubeconfig),
            "POD_ID": f"{RELEASE}-0",
            "AZURE_STORAGE_CONNECTION_STRING": store.connection_string,
        },
        workdir / "operator.log",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def measure(
    count: int, store: Store, assets: Path, workdir: Path, *, window: float, settle: float, timeout: float
) -> Run:
    load = os.getloadavg()
    names = [f"fm-{i:04d}" for i in range(count)]
    with ControlPlane(workdir, assets) as plane, operator_on(plane, store, workdir) as operator:
        pid = operator.pid
        idle = Usage.of(pid)
        ramp_start = audit_end(plane.audit_log)
        created: dict[str, float] = {}
        creator = threading.Thread(
            target=create_models, args=(plane.admin_kubeconfig, names, store, created), daemon=True
        )
        ready: dict[str, float] = {}
        available: dict[str, float] = {}
        with plane.admin() as admin:
            started = time.monotonic()
            creator.start()
            while len(ready) < count:
                if time.monotonic() - started > timeout:
                    raise TimeoutError(
                        f"{len(ready)} of {count} ForecastModels Ready after {timeout:.0f} s; "
                        f"the operator's log ends:\n{operator.output()[-3000:]}"
                    )
                play_kubelet(admin)
                first_seen(admin, ready, available)
                time.sleep(POLL_SECONDS)
            all_ready = max(ready.values()) - started
            creator.join()
            ramp_end = audit_end(plane.audit_log)
            ramp = audit_requests(plane.audit_log, OPERATOR_USER, ramp_start, ramp_end)
            after_ramp = Usage.of(pid)

            # The operator may still be working through the watch events of the ramp: wait until it
            # has made no request for `settle` seconds (the peering keep-alive aside).
            offset, quiet_since, last_ready = ramp_end, time.monotonic(), max(ready.values())
            while time.monotonic() - quiet_since < settle:
                if time.monotonic() - started > timeout:
                    raise TimeoutError(
                        f"the operator was not quiet for {settle:.0f} s within {timeout:.0f} s"
                    )
                play_kubelet(admin)
                time.sleep(1)
                end = audit_end(plane.audit_log)
                busy = audit_requests(plane.audit_log, OPERATOR_USER, offset, end)
                if busy.reads or busy.write_count:
                    quiet_since = time.monotonic()
                offset = end
            quiet_after_ready = quiet_since - last_ready
            tail = audit_requests(plane.audit_log, OPERATOR_USER, ramp_end, offset)
            window_start, before = audit_end(plane.audit_log), Usage.of(pid)
            began = time.monotonic()
            while time.monotonic() - began < window:
                play_kubelet(admin)
                time.sleep(1)
            elapsed = time.monotonic() - began
            window_end, after = audit_end(plane.audit_log), Usage.of(pid)
        steady = audit_requests(plane.audit_log, OPERATOR_USER, window_start, window_end)
        lifetime = audit_requests(plane.audit_log, OPERATOR_USER, 0, window_end)
    per_minute = 60 / elapsed
    return Run(
        count=count,
        load_average=load,
        seconds_to_all_ready=all_ready,
        ready_seconds={name: ready[name] - created[name] for name in names},
        available_seconds={name: available[name] - created[name] for name in names if name in available},
        ramp_writes=dict(ramp.writes),
        ramp_writes_per_model=ramp.write_count / count,
        ramp_reads_per_model=ramp.reads / count,
        quiet_seconds_after_ready=max(0.0, quiet_after_ready),
        tail_reads=tail.reads,
        tail_writes=tail.write_count,
        window_seconds=elapsed,
        steady_writes=dict(steady.writes),
        steady_writes_per_min=steady.write_count * per_minute,
        steady_peering_writes_per_min=steady.peering_writes * per_minute,
        steady_reads_per_min=steady.reads * per_minute,
        watches_open=lifetime.watches_opened - lifetime.watches_closed,
        watches_opened_in_window=steady.watches_opened,
        denied=lifetime.denied,
        cpu_seconds={
            "idle": idle.cpu_seconds,
            "ramp": after_ramp.cpu_seconds - idle.cpu_seconds,
            "window": after.cpu_seconds - before.cpu_seconds,
        },
        cpu_seconds_per_min_steady=(after.cpu_seconds - before.cpu_seconds) * per_minute,
        rss_mib={"idle": idle.rss_mib, "steady": after.rss_mib},
    )


# --------------------------------------------------------------------------------------------- report


def summary(run: Run) -> dict[str, Any]:
    """The run as printed and as written by --json (per-resource times reduced to p50/p95/max)."""
    found = asdict(run)
    found["ready_seconds"] = spread(list(run.ready_seconds.values()))
    found["available_seconds"] = spread(list(run.available_seconds.values()))
    found["rss_growth_mib"] = run.rss_growth_mib
    return found


RATIOS: Final[dict[str, Callable[[Mapping[str, Any]], float]]] = {
    "seconds until all Ready": lambda s: s["seconds_to_all_ready"],
    "seconds until quiet after": lambda s: s["quiet_seconds_after_ready"],
    "create → Ready p50": lambda s: s["ready_seconds"]["p50"],
    "operator CPU s, ramp": lambda s: s["cpu_seconds"]["ramp"],
    "operator CPU s/min, steady": lambda s: s["cpu_seconds_per_min_steady"],
    "read requests/min, steady": lambda s: s["steady_reads_per_min"],
    "RSS growth over idle": lambda s: s["rss_growth_mib"],
}


def ratios(small: Mapping[str, Any], large: Mapping[str, Any]) -> dict[str, float | None]:
    """large / small for each figure (None where the small run's figure is 0)."""
    found: dict[str, float | None] = {}
    for name, figure in RATIOS.items():
        below, above = figure(small), figure(large)
        found[name] = above / below if below else None
    return found


def print_run(s: Mapping[str, Any]) -> None:
    def times(key: str) -> str:
        t = s[key]
        return f"p50 {t['p50']:6.1f} s   p95 {t['p95']:6.1f} s   max {t['max']:6.1f} s"

    load = ", ".join(f"{x:.2f}" for x in s["load_average"])
    print(f"\n== {s['count']} ForecastModels (load average before the run: {load})")
    print(f"  all Ready after            {s['seconds_to_all_ready']:8.1f} s")
    print(f"  create → Ready             {times('ready_seconds')}")
    print(f"  create → Deployment avail. {times('available_seconds')}")
    print(
        f"  ramp requests per model    {s['ramp_writes_per_model']:.1f} writes, "
        f"{s['ramp_reads_per_model']:.1f} reads"
    )
    print(f"  ramp writes                {s['ramp_writes']}")
    print(
        f"  after all Ready            {s['quiet_seconds_after_ready']:.1f} s until its last request "
        f"({s['tail_reads']} reads, {s['tail_writes']} writes)"
    )
    print(
        f"  steady state ({s['window_seconds']:.0f} s window): "
        f"{s['steady_writes_per_min']:.1f} writes/min (+{s['steady_peering_writes_per_min']:.1f} "
        f"peering keep-alive) {s['steady_writes'] or ''}, "
        f"{s['steady_reads_per_min']:.1f} reads/min, "
        f"{s['watches_open']} watch streams open ({s['watches_opened_in_window']} opened in the window)"
    )
    cpu = s["cpu_seconds"]
    print(
        f"  operator CPU               {cpu['idle']:.1f} s start-up, {cpu['ramp']:.1f} s ramp, "
        f"{s['cpu_seconds_per_min_steady']:.2f} s/min steady"
    )
    rss = s["rss_mib"]
    print(
        f"  operator RSS               {rss['idle']:.0f} MiB idle, {rss['steady']:.0f} MiB steady "
        f"(+{s['rss_growth_mib']:.1f} MiB, {1024 * s['rss_growth_mib'] / s['count']:.0f} KiB per model)"
    )
    print(f"  denied requests (403)      {s['denied']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[20, 200], help="ForecastModels per run")
    parser.add_argument("--window", type=float, default=60, help="steady-state window, seconds")
    parser.add_argument(
        "--settle", type=float, default=10, help="quiet seconds before the window starts (no requests)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="for all to be Ready, seconds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--keep", type=Path, help="work in this (new) folder and keep it: audit logs, operator logs"
    )
    args = parser.parse_args()
    # Stopped with SIGTERM, it still stops its control plane, Azurite and operator (the with blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if min(args.counts) < 1:
        parser.error("--counts: at least 1 ForecastModel per run")
    assets = find_assets()

    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="operator-bench-")))
        with Azurite(work / "azurite") as azurite:
            (work / "model").mkdir()
            store = publish_model(azurite.connection_string, work / "model")
            for count in sorted(set(args.counts)):
                print(f"running {count} ForecastModels ...", flush=True)
                run = measure(
                    count,
                    store,
                    assets,
                    work / f"run-{count}",
                    window=args.window,
                    settle=args.settle,
                    timeout=args.timeout,
                )
                runs.append(summary(run))
                print_run(runs[-1])
    report: dict[str, Any] = {"cpus": os.cpu_count(), "runs": runs, "ratios": None}
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        report["ratios"] = ratios(small, large)
        print(f"\n== {large['count']} / {small['count']} ForecastModels")
        for name, value in report["ratios"].items():
            print(f"  {name:28} {'n/a' if value is None else f'{value:.2f}x'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

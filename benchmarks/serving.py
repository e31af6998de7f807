"""Serving throughput: raw onnxruntime vs a plain FastAPI + pydantic app vs `forecast serve`.

One run on this machine serves the same ONNX model three ways and prints req/s, rows/s and p50/p99
latency at batch 32 and 1024:

- raw onnxruntime: `session.run` in a loop, in this process, on a fixed [N, F] batch (one thread);
- baseline: `benchmarks/baseline_app.py`, a plain FastAPI + pydantic V2 endpoint under uvicorn;
- service: `forecast serve --no-access-log`; again with the access log on; again with
  `--coalesce-rows 1`, which scores every request alone, to show what coalescing adds; and again with
  `--no-drift`, to show what input drift monitoring costs (the issue's target: under 5 % of req/s).

Every server runs as a subprocess with one worker on a free 127.0.0.1 port and is driven by `hey` (or
`wrk`) from Debian with 8 connections for a bounded time, POSTing the same V2 body. Measurements
alternate order between rounds and the median over rounds is reported. Targets (from the issue): the
service reaches at least 2x the baseline's req/s at batch 32, and at least 60 % of raw onnxruntime's
rows/s at batch 1024. Nothing here asserts timings: it prints them.

    python benchmarks/serving.py [--quick] [--model-dir DIR] [--tool hey|wrk]

Without --model-dir it synthesises a modest dataset and trains a model with the real pipeline
(`forecast synth` + `forecast train`, fixed hyper-parameters: 300 trees, 43 features) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import psutil

from retail_forecast.core.drift import Bins, RollingSketch
from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.model import load_model
from retail_forecast.inference.observability import DRIFT_ROWS

HERE: Final = Path(__file__).resolve().parent
HOST: Final = "127.0.0.1"
BATCHES: Final = (32, 1024)
RAW: Final = "raw onnxruntime"
BASELINE: Final = "fastapi+pydantic"
SERVICE: Final = "service"
SERVICE_LOG: Final = "service+access log"
SERVICE_ALONE: Final = "service, no coalescing"
SERVICE_NO_DRIFT: Final = "service, no drift"
TARGET_REQ_RATIO: Final = 2.0
TARGET_ROWS_RATIO: Final = 0.60
TARGET_DRIFT_COST: Final = 0.05
# Fixed hyper-parameters: no search, so the model is the same size on every run.
TRAIN_PARAMS: Final = (
    "--loss", "poisson", "--learning-rate", "0.05", "--max-leaf-nodes", "31", "--min-samples-leaf", "20",
    "--l2-regularization", "0.0", "--max-features", "1.0", "--max-iter", "300",
)  # fmt: skip


@dataclass(frozen=True)
class Result:
    way: str
    batch: int
    req_s: float
    p50_ms: float
    p99_ms: float
    # the server process's CPU time (all its threads) per request served; NaN for raw onnxruntime
    cpu_ms: float = float("nan")

    @property
    def rows_s(self) -> float:
        return self.req_s * self.batch


@dataclass(frozen=True)
class Server:
    way: str
    url: str  # the infer URL
    process: subprocess.Popen[bytes]
    log: Path


def _median(results: list[Result]) -> Result:
    first = results[0]
    return Result(
        first.way,
        first.batch,
        statistics.median(r.req_s for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        statistics.median(r.cpu_ms for r in results),
    )


# ---------------------------------------------------------------------------------------------- model


def build_model(work: Path) -> Path:
    """Synthesise data and train a model with the real pipeline (about 30 s)."""
    forecast = [sys.executable, "-m", "retail_forecast.cli"]
    data = work / "sales.parquet"
    model_dir = work / "model"
    print("building a model: forecast synth + forecast train (fixed parameters) ...", flush=True)
    subprocess.run(
        [*forecast, "synth", "--out", str(data), "--stores", "4", "--items", "10", "--seed", "0"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            *forecast, "train", "--data", str(data), "--out", str(model_dir), "--model-version", "bench",
            "--max-rows", "50000", "--search-rows", "20000", *TRAIN_PARAMS,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return model_dir


def batch_rows(model_dir: Path, batch: int) -> npt.NDArray[np.float32]:
    """Real feature rows (the manifest's golden sample), tiled to `batch` rows."""
    golden = json.loads((model_dir / "manifest.json").read_text())["golden"]["inputs"]
    rows = np.asarray(golden, dtype=np.float32)
    return np.ascontiguousarray(np.resize(rows, (batch, rows.shape[1])))


def infer_body(input_name: str, rows: npt.NDArray[np.float32]) -> bytes:
    """The V2 body a client sends: nested [N, F] list of the float32 values (as Python floats)."""
    tensor = {"name": input_name, "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


# ------------------------------------------------------------------------------------------ drift hook


def measure_drift_hook(model_dir: Path, rows: npt.NDArray[np.float32], seconds: float) -> float:
    """CPU ms per request that drift monitoring adds, measured on its own: what the service does with each
    scored request's rows (`RollingSketch.observe`: an append, and every FOLD_ROWS rows a sampled fold), in
    a loop on this thread. Thread CPU time, not wall time: other work on a shared host barely moves it."""
    manifest = Manifest.load(model_dir)
    if manifest.drift_reference is None:
        return float("nan")
    sketch = RollingSketch(Bins(manifest.drift_reference, manifest.features.names))
    requests = 0
    cpu_started = time.thread_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            sketch.observe(rows)
        requests += 100
    return (time.thread_time() - cpu_started) / requests * 1000


# ------------------------------------------------------------------------------------ raw onnxruntime


def measure_raw(model_dir: Path, rows: npt.NDArray[np.float32], seconds: float) -> Result:
    model = load_model(model_dir, intra_op_threads=1)
    session, feeds, outputs = model.session, {model.input_name: rows}, [model.output_name]
    run = session.run
    for _ in range(20):
        run(outputs, feeds)
    clock = time.perf_counter
    latencies: list[float] = []
    started = clock()
    deadline = started + seconds
    now = started
    while now < deadline:
        before = now
        run(outputs, feeds)
        now = clock()
        latencies.append(now - before)
    elapsed = now - started
    lat = np.asarray(latencies) * 1000
    return Result(
        RAW, len(rows), len(latencies) / elapsed, float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    )


# -------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http(url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_server(way: str, command: list[str], infer_path: str, work: Path) -> Server:
    port = free_port()
    log = work / f"{way.replace(' ', '_').replace('+', '_')}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to us; we stop the servers ourselves
        )
    return Server(way, f"http://{HOST}:{port}{infer_path}", process, log)


def wait_ready(server: Server, ready_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise RuntimeError(f"{server.way} exited with {code}:\n{server.log.read_text()}")
        try:
            status, _ = http(ready_url, timeout=2.0)
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.way} not ready after {timeout:.0f} s:\n{server.log.read_text()}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def servers(model_dir: Path, work: Path, model_name: str) -> Iterator[dict[str, Server]]:
    infer_path = f"/v2/models/{model_name}/infer"
    forecast = [sys.executable, "-m", "retail_forecast.cli", "serve", "--model-dir", str(model_dir)]
    # no shutdown delay: nothing routes here through Kubernetes endpoints, so stop at once
    forecast += ["--host", HOST, "--log-level", "info", "--shutdown-delay", "0"]
    specs = {
        BASELINE: ([sys.executable, str(HERE / "baseline_app.py"), "--model-dir", str(model_dir)], "/ready"),
        SERVICE: ([*forecast, "--no-access-log"], "/v2/health/ready"),
        # one JSON access log line per request, to its log file
        SERVICE_LOG: (forecast, "/v2/health/ready"),
        SERVICE_ALONE: ([*forecast, "--no-access-log", "--coalesce-rows", "1"], "/v2/health/ready"),
        SERVICE_NO_DRIFT: ([*forecast, "--no-access-log", "--no-drift"], "/v2/health/ready"),
    }
    started: dict[str, Server] = {}
    try:
        for way, (command, _) in specs.items():
            started[way] = start_server(way, command, infer_path, work)
        for way, (_, ready_path) in specs.items():
            server = started[way]
            wait_ready(server, server.url.split("/v2/models/")[0] + ready_path)
        yield started
    finally:
        for server in started.values():
            stop(server)


# ------------------------------------------------------------------------------------- load generator


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "secs": 1.0, "m": 60.0}[unit]


def run_hey(url: str, body_file: Path, connections: int, seconds: float | None, requests: int) -> str:
    command = ["hey", "-c", str(connections), "-m", "POST", "-T", "application/json", "-D", str(body_file)]
    command += ["-z", f"{seconds}s"] if seconds else ["-n", str(requests)]
    return subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout


def _find(pattern: str, output: str) -> tuple[str, ...]:
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"cannot read {pattern!r} in the load generator's output:\n{output}")
    return match.groups()


def parse_hey(output: str) -> tuple[float, float, float]:
    statuses = re.findall(r"\[(\d+)\]\s+\d+ responses", output)
    if statuses != ["200"] or "Error distribution" in output:
        raise RuntimeError(f"load generator saw failures:\n{output}")
    (req_s,) = _find(r"Requests/sec:\s+([\d.]+)", output)
    (p50,) = _find(r"50% in ([\d.]+) secs", output)
    if re.search(r"99% in [\d.]+ secs", output):
        (p99,) = _find(r"99% in ([\d.]+) secs", output)
    else:  # hey prints no 99 % line under 100 responses, where the nearest-rank p99 is the slowest
        (p99,) = _find(r"Slowest:\s+([\d.]+) secs", output)
    return float(req_s), float(p50) * 1000, float(p99) * 1000


WRK_SCRIPT: Final = """
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""


def run_wrk(url: str, body_file: Path, connections: int, seconds: float | None, requests: int) -> str:
    script = body_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    duration = max(1, round(seconds if seconds else requests / 1000))  # wrk takes whole seconds only
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s", str(script)]
    env = {**os.environ, "WRK_BODY": str(body_file)}
    return subprocess.run([*command, url], check=True, capture_output=True, text=True, env=env).stdout


def parse_wrk(output: str) -> tuple[float, float, float]:
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"load generator saw failures:\n{output}")
    (req_s,) = _find(r"Requests/sec:\s+([\d.]+)", output)
    p50 = _find(r"50%\s+([\d.]+)(us|ms|s)\b", output)
    p99 = _find(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    return float(req_s), _seconds(*p50) * 1000, _seconds(*p99) * 1000


# ---------------------------------------------------------------------------------------------- main


def check_tool(tool: str) -> None:
    if shutil.which(tool) is None:
        sys.exit(
            f"{tool} is not installed: install the Debian package with `apt-get install -y {tool}` "
            f"(or pass --tool {'wrk' if tool == 'hey' else 'hey'})"
        )


def check_answer(server: Server, body: bytes, expected: npt.NDArray[np.float32]) -> None:
    status, answer = http(server.url, body)
    if status != 200:
        raise RuntimeError(f"{server.way} answered {status}: {answer[:300]!r}")
    data = np.asarray(json.loads(answer)["outputs"][0]["data"], dtype=np.float32)
    if data.shape != expected.shape or not np.allclose(data, expected, rtol=1e-5, atol=1e-5):
        raise RuntimeError(f"{server.way} predictions differ from raw onnxruntime's")


def check_drift(server: Server, reported: bool) -> None:
    """The drift comparison compares what it says: drift reported by one service and not the other."""
    _, metrics = http(server.url.split("/v2/models/")[0] + "/metrics")
    sample = re.search(rb"^" + DRIFT_ROWS.encode() + rb" ", metrics, re.MULTILINE)  # not just # HELP
    if (sample is not None) != reported:
        raise RuntimeError(f"{server.way} {'does not report' if reported else 'reports'} input drift")


def print_table(results: list[Result]) -> None:
    header = f"{'way':<24}{'batch':>6}{'req/s':>11}{'rows/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms/req':>12}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.way:<24}{r.batch:>6}{r.req_s:>11,.0f}{r.rows_s:>12,.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{r.cpu_ms:>12.3f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement instead of 10")
    parser.add_argument("--model-dir", type=Path, help="reuse a trained model folder instead of training one")
    parser.add_argument("--tool", choices=["hey", "wrk"], default="hey", help="load generator (default hey)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, help="per measurement (default 10, or 3 with --quick)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the median is reported")
    parser.add_argument(
        "--warmup", type=int, default=300, help="requests per server and batch before measuring"
    )
    args = parser.parse_args()
    check_tool(args.tool)
    seconds: float = args.seconds or (3.0 if args.quick else 10.0)
    run, parse = (run_hey, parse_hey) if args.tool == "hey" else (run_wrk, parse_wrk)

    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        work = Path(tmp)
        model_dir: Path = args.model_dir or build_model(work)
        manifest: dict[str, Any] = json.loads((model_dir / "manifest.json").read_text())
        model = load_model(model_dir)
        n_features = model.n_features
        if model.manifest.drift_reference is None:
            print(
                "note: this model has no drift_reference, so no server reports drift; retrain it to compare"
            )
        print(
            f"model {manifest['name']} {manifest['version']}: {n_features} features; "
            f"{args.tool}, {args.connections} connections, {seconds:g} s x {args.rounds} rounds per cell; "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        bodies: dict[int, Path] = {}
        expected: dict[int, npt.NDArray[np.float32]] = {}
        rows: dict[int, npt.NDArray[np.float32]] = {}
        for batch in BATCHES:
            rows[batch] = batch_rows(model_dir, batch)
            expected[batch] = model.predict(rows[batch])
            bodies[batch] = work / f"body_{batch}.json"
            bodies[batch].write_bytes(infer_body(model.input_name, rows[batch]))

        samples: dict[tuple[str, int], list[Result]] = {}
        hook_ms: dict[int, list[float]] = {batch: [] for batch in BATCHES}
        with servers(model_dir, work, manifest["name"]) as running:
            order = [BASELINE, SERVICE, SERVICE_LOG, SERVICE_ALONE, SERVICE_NO_DRIFT]
            for server in running.values():
                for batch in BATCHES:
                    check_answer(server, bodies[batch].read_bytes(), expected[batch])
                    run(server.url, bodies[batch], args.connections, None, args.warmup)
            if model.manifest.drift_reference is not None:
                check_drift(running[SERVICE], reported=True)
                check_drift(running[SERVICE_NO_DRIFT], reported=False)
            for round_ in range(args.rounds):
                ways = [RAW, *order] if round_ % 2 == 0 else [*reversed(order), RAW]
                for batch in BATCHES:
                    hook_ms[batch].append(measure_drift_hook(model_dir, rows[batch], seconds / 4))
                    for way in ways:
                        if way == RAW:
                            result = measure_raw(model_dir, rows[batch], seconds)
                        else:
                            process = psutil.Process(running[way].process.pid)
                            before = process.cpu_times()
                            req_s, p50, p99 = parse(
                                run(running[way].url, bodies[batch], args.connections, seconds, 0)
                            )
                            after = process.cpu_times()
                            cpu = after.user + after.system - before.user - before.system
                            result = Result(way, batch, req_s, p50, p99, cpu / (req_s * seconds) * 1000)
                        samples.setdefault((way, batch), []).append(result)
                        print(
                            f"  round {round_ + 1} {way:<24} batch {batch:>5}: {result.req_s:>9,.0f} req/s",
                            flush=True,
                        )

    results = [_median(samples[(way, batch)]) for batch in BATCHES for way in (RAW, *order)]
    print()
    print_table(results)
    by = {(r.way, r.batch): r for r in results}
    req_ratio = by[(SERVICE, 32)].req_s / by[(BASELINE, 32)].req_s
    req_ratio_log = by[(SERVICE_LOG, 32)].req_s / by[(BASELINE, 32)].req_s
    req_ratio_alone = by[(SERVICE_ALONE, 32)].req_s / by[(BASELINE, 32)].req_s
    rows_ratio = by[(SERVICE, 1024)].rows_s / by[(RAW, 1024)].rows_s
    rows_ratio_log = by[(SERVICE_LOG, 1024)].rows_s / by[(RAW, 1024)].rows_s
    rows_ratio_alone = by[(SERVICE_ALONE, 1024)].rows_s / by[(RAW, 1024)].rows_s
    baseline_rows = by[(BASELINE, 1024)].rows_s / by[(RAW, 1024)].rows_s
    print()
    mark = {True: "met", False: "MISSED"}
    print(
        f"service / baseline req/s at batch 32:      {req_ratio:5.2f}x  (target >= {TARGET_REQ_RATIO:.1f}x: "
        f"{mark[req_ratio >= TARGET_REQ_RATIO]}); with access log {req_ratio_log:.2f}x; "
        f"without coalescing {req_ratio_alone:.2f}x"
    )
    print(
        f"service / raw onnxruntime rows/s at 1024:  {rows_ratio:5.0%}   (target >= {TARGET_ROWS_RATIO:.0%}: "
        f"{mark[rows_ratio >= TARGET_ROWS_RATIO]}); with access log {rows_ratio_log:.0%}; "
        f"without coalescing {rows_ratio_alone:.0%}; baseline {baseline_rows:.0%}"
    )
    # Drift monitoring's cost: in req/s (the measure; on a busy shared host its noise exceeds 5 %),
    # and as the hook's own CPU time per request against the no-drift service's CPU time per request.
    drift_cost = {
        batch: 1 - by[(SERVICE, batch)].req_s / by[(SERVICE_NO_DRIFT, batch)].req_s for batch in BATCHES
    }
    hook_share = {
        batch: statistics.median(hook_ms[batch]) / by[(SERVICE_NO_DRIFT, batch)].cpu_ms for batch in BATCHES
    }
    print(
        "drift monitoring's cost in req/s:         "
        + ", ".join(f"{cost:+.1%} at batch {batch}" for batch, cost in drift_cost.items())
        + "; its hook's CPU per request: "
        + ", ".join(
            f"{statistics.median(hook_ms[batch]) * 1000:.1f} us = {share:.1%} of the service's "
            f"at batch {batch}"
            for batch, share in hook_share.items()
        )
        + f"  (target < {TARGET_DRIFT_COST:.0%}: {mark[max(hook_share.values()) < TARGET_DRIFT_COST]})"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers were stopped by the context manager
        sys.exit(130)

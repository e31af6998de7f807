"""The real service as a process: `forecast serve` under uvicorn on 127.0.0.1, as a kubelet would see it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx
import numpy as np

from retail_forecast.core.data import Panel

FORECAST: Final = str(Path(sys.executable).with_name("forecast"))
READY_TIMEOUT_S: Final = 120.0
CLI_TIMEOUT_S: Final = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without ambient Azure settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "FORECAST_"))}
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FORECAST, *args],
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


class Service:
    """`forecast serve ... --host 127.0.0.1 --port <free>`; counts every HTTP answer it gets while waiting."""

    def __init__(self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.readiness_answers = 0  # requests the server answered (and so counted in its metrics)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [FORECAST, "serve", *args, "--host", "127.0.0.1", "--port", str(self.port)],
                env=cli_env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while True:
                assert self.process.poll() is None, (
                    f"forecast serve exited with {self.process.returncode}:\n{self.output()}"
                )
                try:
                    response = client.get("/v2/health/ready")
                except httpx.TransportError:
                    pass  # not listening yet: the server never saw this request
                else:
                    self.readiness_answers += 1
                    if response.status_code == 200:
                        return
                assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT_S} s:\n{self.output()}"
                time.sleep(0.05)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code (SIGKILL and fail if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            raise AssertionError(
                f"forecast serve ignored SIGTERM for {timeout} s:\n{self.output()}"
            ) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def infer_body(rows: np.ndarray[Any, Any], name: str = "features") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}]}


def forecast_series(panel: Panel, s: int, history: int) -> dict[str, Any]:
    """Series `s`'s last `history` periods as a /v1/forecast series (no future covariates)."""
    end = panel.n_periods
    points = []
    for t in range(end - history, end):
        point: dict[str, Any] = {
            "date": str(panel.dates[t].date()),
            "sales": float(panel.sales[s, t]),
            "promo": int(panel.promo[s, t]),
        }
        if not np.isnan(panel.price[s, t]):
            point["price"] = float(panel.price[s, t])
        points.append(point)
    return {"store_id": str(panel.store_ids[s]), "item_id": str(panel.item_ids[s]), "history": points}


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class PeakMemory:
    """How far a process's resident memory rose while the block ran (Linux: VmHWM, reset on entry)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before_mib = 0.0
        self.growth_mib = 0.0

    def __enter__(self) -> Self:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # the peak restarts from the current RSS
        self.before_mib = _status_kib(self.pid, "VmRSS") / 1024
        return self

    def __exit__(self, *_: object) -> None:
        self.growth_mib = _status_kib(self.pid, "VmHWM") / 1024 - self.before_mib

"""`forecast operator` as a process, the way users and the chart run it, against a real API server."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.controlplane import wait_until
from tests.inference.live import FORECAST, cli_env, free_port
from tests.processes import Background, launch, terminate


class OperatorProcess(Background):
    """`forecast ARGS --liveness http://127.0.0.1:<free>/healthz` with `env` (KUBECONFIG, store).

    ARGS start with `operator`: they are what the chart's container passes to the image's `forecast`.

    Started, it has answered its liveness probe: kopf has logged in and runs its handlers. Stopped with
    SIGTERM, as the kubelet stops a pod, and waited for; its output is in `log`.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.env = cli_env(env)
        self.log = log
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        self._process = launch([FORECAST, *self.args, "--liveness", self.liveness], self.log, self.env)
        try:
            wait_until(self._live, timeout, what=f"the operator's liveness probe; its log:\n{self.output()}")
        except BaseException:
            self.stop()
            raise

    def _live(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"the operator exited ({self._process.returncode}):\n{self.output()}")
        try:
            with urllib.request.urlopen(self.liveness, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    @property
    def pid(self) -> int:
        """The running operator's process id (for its CPU and memory, in benchmarks/operator.py)."""
        assert self._process is not None, "not started"
        return self._process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 30 s; returns the exit code (None if it never started)."""
        process, self._process = self._process, None
        return None if process is None else terminate(process, grace=30)

    def kill(self) -> None:
        """SIGKILL (`kill -9`): no cleanup handlers run, as when a node dies."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=30)

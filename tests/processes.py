"""Background processes for tests (the control plane's binaries, Azurite, `forecast operator`): started with
their output appended to a log file, stopped with SIGTERM and, after a grace period, SIGKILL."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def launch(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `args` with no stdin, stdout and stderr appended to `log` (the child keeps its own handle)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(args), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def terminate(process: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM (a clean shutdown: Azurite persists, the operator runs its cleanup), SIGKILL after
    `grace` seconds; waits for the exit and returns its code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


class Background:
    """`with thing:` starts it and stops it whatever happens inside; subclasses define start and stop."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

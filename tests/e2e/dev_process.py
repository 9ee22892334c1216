"""`blocks dev` as the e2e tests run it: in a temp data dir on free ports, its output in a file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.support import free_port

KEY_LINE = re.compile(r"^(owner|approver)\s+\([^)]+\):\s+(blk_\S+)$", re.MULTILINE)


@dataclass
class DevStack:
    """The data dir and ports of one `blocks dev`; `start` may be called again on the same ones."""

    data_dir: Path
    ports: dict[str, int] = field(
        default_factory=lambda: {name: free_port() for name in ("api", "pg", "temporal", "ui")}
    )

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_")},
            "BLOCKS_DATA_DIR": str(self.data_dir),
            "BLOCKS_API_PORT": str(self.ports["api"]),
            "BLOCKS_POSTGRES_PORT": str(self.ports["pg"]),
            "BLOCKS_TEMPORAL_PORT": str(self.ports["temporal"]),
            "BLOCKS_TEMPORAL_UI_PORT": str(self.ports["ui"]),
            "COLUMNS": "200",
        }

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "blocks.cli", "dev"],
            env=self.env(),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run another `blocks` command beside the running stack, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "blocks.cli", *args],
            input=stdin, env=self.env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def wait_ready(self, process: subprocess.Popen[bytes], log: Path) -> None:
        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                answer = httpx.get(f"{self.api}/readyz", timeout=2)
            except httpx.TransportError:
                return False
            return answer.status_code == 200 and "Ctrl-C" in log.read_text()

        assert wait_until(ready), f"blocks dev never became ready:\n{log.read_text()}"


def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has ended; it only waits for its parent to read its status)."""
    found = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def stop(process: subprocess.Popen[bytes]) -> list[int]:
    """Interrupt like Ctrl-C; return the pids of descendants that outlived it."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    time.sleep(0.5)
    return [c.pid for c in alive(children)]

"""`blocks dev` supervises: a killed child comes back and says so, a second `blocks dev` on the same
data refuses and names the first, and `kill -9` of `blocks dev` leaves no process behind.

One `blocks dev` serves the tests in this module, in order; the last one SIGKILLs it.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from blocks.infra.embedded.supervisor import port_open
from tests.e2e.dev_process import KEY_LINE, DevStack, alive, stop, wait_until
from tests.support import EXPENSE

CHILDREN = ("api", "worker", "postgres", "temporal")


@dataclass
class RunningDev:
    stack: DevStack
    process: subprocess.Popen[bytes]
    log: Path
    keys: dict[str, str]

    def child(self, name: str) -> psutil.Process:
        """The live direct child of `blocks dev` that runs `name` (api, worker, postgres, temporal)."""
        found = [c for c in alive(psutil.Process(self.process.pid).children()) if _runs(c, name)]
        assert len(found) == 1, (name, found)
        return found[0]

    def restarted(self, name: str, label: str, killed: psutil.Process) -> int:
        """Wait for the supervisor to report `label` restarted; the new pid, a live `name`."""
        killed.wait(timeout=30)
        said = re.compile(rf"^{label} restarted \(pid (\d+)\)$", re.MULTILINE)
        assert wait_until(lambda: said.search(self.log.read_text()) is not None, 90), (
            self.log.read_text()
        )
        pid = int(said.findall(self.log.read_text())[-1])
        assert pid != killed.pid
        assert self.child(name).pid == pid
        return pid

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.stack.api}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False


def _runs(process: psutil.Process, name: str) -> bool:
    try:
        argv = process.cmdline()
    except psutil.NoSuchProcess:
        return False
    if name in ("api", "worker"):
        return argv[-2:] == ["blocks.cli", name]
    return bool(argv) and Path(argv[0]).name == name


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDev]:
    root = tmp_path_factory.mktemp("dev-supervision")
    stack = DevStack(root / "data")
    log = root / "dev.log"
    process = stack.start(log)
    try:
        stack.wait_ready(process, log)
        yield RunningDev(stack, process, log, dict(KEY_LINE.findall(log.read_text())))
    finally:
        if process.poll() is None:
            stop(process)


def test_a_second_dev_on_the_same_data_refuses_naming_the_first(dev: RunningDev) -> None:
    second = dev.stack.cli("dev")
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"PID {dev.process.pid}" in second.stdout, second.stdout
    # It touched nothing: the first one still serves from its own PostgreSQL.
    assert dev.ready()
    assert dev.child("postgres").is_running()


def test_a_killed_worker_is_restarted_said_so_and_serves(dev: RunningDev) -> None:
    worker = dev.child("worker")
    worker.send_signal(signal.SIGKILL)
    dev.restarted("worker", "worker", worker)
    assert re.search(
        r"^worker exited \(killed by SIGKILL\); restarting it in 1s$",
        dev.log.read_text(),
        re.MULTILINE,
    ), dev.log.read_text()
    # The new worker takes the run to its approval step.
    owner = {"Authorization": f"Bearer {dev.keys['owner']}"}
    run = httpx.post(
        f"{dev.stack.api}/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=owner,
        timeout=30,
    )
    assert run.status_code == 201, run.text

    def waiting_for_approval() -> bool:
        got = httpx.get(f"{dev.stack.api}/v1/runs/{run.json()['id']}", headers=owner, timeout=30)
        # A 503 (the restarted worker not polling yet, so nothing answers the run's query) is
        # what a client retries: not yet.
        return got.status_code == 200 and bool(got.json()["pending_steps"])

    assert wait_until(waiting_for_approval, 60)


def test_a_killed_api_is_restarted(dev: RunningDev) -> None:
    api = dev.child("api")
    api.send_signal(signal.SIGKILL)
    dev.restarted("api", "api", api)
    assert wait_until(dev.ready, 60), dev.log.read_text()


def test_a_killed_postgres_is_restarted_and_the_api_serves_again(dev: RunningDev) -> None:
    postmaster = dev.child("postgres")
    postmaster.send_signal(signal.SIGKILL)
    dev.restarted("postgres", "PostgreSQL", postmaster)
    owner = {"Authorization": f"Bearer {dev.keys['owner']}"}

    def serving() -> bool:
        try:
            got = httpx.get(f"{dev.stack.api}/v1/runs", headers=owner, timeout=10)
        except httpx.TransportError:
            return False
        return got.status_code == 200

    assert wait_until(serving, 60), dev.log.read_text()


def test_kill_9_of_dev_leaves_nothing_and_the_next_dev_starts(dev: RunningDev) -> None:
    postmaster_pid = int((dev.stack.data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    family = {psutil.Process(postmaster_pid), *psutil.Process(dev.process.pid).children(True)}
    assert {name for name in CHILDREN for p in family if _runs(p, name)} == set(CHILDREN)
    dev.process.send_signal(signal.SIGKILL)
    dev.process.wait(timeout=10)

    def left() -> list[dict[str, object]]:
        described = []
        for process in alive(list(family)):
            try:
                described.append(process.as_dict(["pid", "username", "cmdline"]))
            except psutil.NoSuchProcess:
                continue  # it ended between the two looks
        return described

    assert wait_until(lambda: not left(), 60), left()
    assert [port for port in dev.stack.ports.values() if port_open("127.0.0.1", port)] == []

    # The next `blocks dev` takes the data dir over at once: no lock, process or port in the way.
    log = dev.log.with_name("next.log")
    process = dev.stack.start(log)
    try:
        dev.stack.wait_ready(process, log)
        assert "already exists" in log.read_text()
    finally:
        assert stop(process) == []

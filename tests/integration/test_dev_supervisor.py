"""The supervisor's parts with real processes: children die with a SIGKILLed parent, restarts back
off and say so, and the data dir lock names its holder and frees itself when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from blocks.infra.embedded.supervisor import DataDirBusy, DataDirLock, Supervisor, spawn
from tests.e2e.dev_process import alive, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")


def test_a_child_dies_with_its_sigkilled_parent() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import signal, sys, time
                from blocks.infra.embedded.supervisor import spawn
                child = spawn(["sleep", "600"], sig=signal.SIGKILL)
                print(child.pid, flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    assert alive([child]) == [child]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_until(lambda: not alive([child]), 30)


def test_a_crashing_child_is_restarted_with_growing_delays_and_said_so() -> None:
    said: list[str] = []
    supervisor = Supervisor(said.append, first_delay=0.01, max_delay=0.04)
    supervisor.start("crasher", lambda: spawn(["sh", "-c", "exit 3"]))
    try:
        assert wait_until(lambda: supervisor.check() or len(said) >= 8, 30)
    finally:
        supervisor.stop_all()
    exits = [line for line in said if "exited" in line]
    assert exits[:4] == [
        f"crasher exited (exit code 3); restarting it in {delay}s"
        for delay in ("0.01", "0.02", "0.04", "0.04")
    ]
    assert any(line.startswith("crasher restarted (pid ") for line in said)


def test_stop_all_stops_children_last_started_first() -> None:
    supervisor = Supervisor(print)
    first = supervisor.start("first", lambda: spawn(["sleep", "600"]))
    second = supervisor.start("second", lambda: spawn(["sleep", "600"]))
    supervisor.stop_all()
    assert first.returncode == second.returncode == -signal.SIGTERM


def test_the_lock_names_its_holder_and_frees_itself_when_the_holder_is_killed(
    tmp_path: Path,
) -> None:
    mine = DataDirLock(tmp_path)
    mine.acquire()
    with pytest.raises(DataDirBusy) as busy:
        DataDirLock(tmp_path).acquire()
    assert busy.value.pid == os.getpid()
    assert f"PID {os.getpid()}" in str(busy.value)
    mine.release()

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from blocks.infra.embedded.supervisor import DataDirLock;"
            "DataDirLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(DataDirBusy) as busy:
        DataDirLock(tmp_path).acquire()
    assert busy.value.pid == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    again = DataDirLock(tmp_path)
    again.acquire()
    again.release()

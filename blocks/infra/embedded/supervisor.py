"""How `blocks dev` keeps its processes: they die with it, a crashed one comes back, one per data dir.

Children die with their parent however it dies, SIGKILL included: each asks the kernel, between
fork and exec, for a signal when its parent goes (Linux `prctl(PR_SET_PDEATHSIG)`), so nothing is
left serving on the ports or using the database after `kill -9` of `blocks dev`. A child that
exits on its own is started again after 1, 2, 4 ... seconds (capped), and the supervisor says which
child, how it ended and when it comes back. A data dir holds one `blocks dev`: an exclusive
`flock` on a file in it, which the kernel releases when the holder dies, however it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

Process = subprocess.Popen[bytes]

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

LOCK_FILE = "dev.lock"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for Popen: the child receives `sig` when this process dies, however it dies.

    The kernel ties the signal to the thread that forks, so start children from the main thread.
    The setting survives exec (of anything but a set-user-id binary) and is set after Popen's
    `user=` switch, which would clear it. Linux only; None (no guarantee) elsewhere.
    """
    if _LIBC is None:
        return None
    prctl = _LIBC.prctl
    parent = os.getpid()

    def arm() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            # The parent died between fork and prctl: no signal will come, so act on it now.
            os.kill(os.getpid(), sig)

    return arm


def spawn(
    args: list[str],
    *,
    log: IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    sig: signal.Signals = signal.SIGTERM,
) -> Process:
    """Popen for a supervised child: it gets `sig` when this process dies, and runs in its own
    process group, so a Ctrl-C at the terminal reaches only the supervisor, which then stops the
    children in order. `log` takes its output (else it shares ours)."""
    return subprocess.Popen(
        args,
        env=env,
        user=user,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        preexec_fn=die_with_parent(sig),
        process_group=0,
    )


def terminate(process: Process, *, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def interrupt_on_stop_signals() -> None:
    """Until `Supervisor.run` watches, SIGTERM and SIGHUP interrupt startup as Ctrl-C does, so the
    caller's cleanup runs for them too."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    for sig in STOP_SIGNALS:
        if sig != signal.SIGINT:
            signal.signal(sig, interrupt)


def wait_port_free(host: str, port: int, *, timeout: float = 15.0) -> None:
    """Wait for a listener on host:port to go (a server of a `blocks dev` that just died is still
    shutting down); raise naming the port if it stays."""
    deadline = time.monotonic() + timeout
    while port_open(host, port):
        if time.monotonic() > deadline:
            raise PortBusy(f"{host}:{port} is in use by another process")
        time.sleep(0.2)


class PortBusy(RuntimeError):
    """A port a child needs stays taken by a process that is not ours."""


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class DataDirBusy(RuntimeError):
    """Another `blocks dev` holds this data dir."""

    def __init__(self, lock_file: Path, pid: int | None) -> None:
        self.lock_file = lock_file
        self.pid = pid
        holder = f"PID {pid}" if pid is not None else "a process that has not written its PID yet"
        super().__init__(f"another `blocks dev` ({holder}) is running on {lock_file.parent}")


class DataDirLock:
    """One `blocks dev` per data dir. The file stays; the lock on it is what counts."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise DataDirBusy naming the holder's PID."""
        # O_CLOEXEC: no child inherits the lock, so none can outlive us holding it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise DataDirBusy(self.path, int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


@dataclass
class _Child:
    name: str
    start: Callable[[], Process]
    stop: Callable[[Process], None]
    process: Process | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts children in order, restarts any that exits, stops them in reverse order.

    `start` callables may block until their child is ready (the databases do) and may raise: a
    failed restart is retried after the next delay. Call everything from the main thread.
    """

    def __init__(
        self,
        report: Callable[[str], None],
        *,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        steady_after: float = 60.0,
    ) -> None:
        self._report = report
        self._first_delay = first_delay
        self._max_delay = max_delay
        # A child that has run this long is well again: its next crash starts over at first_delay.
        self._steady_after = steady_after
        self._children: list[_Child] = []

    def start(
        self,
        name: str,
        start: Callable[[], Process],
        stop: Callable[[Process], None] = terminate,
    ) -> Process:
        """Start a child now (raising if that fails) and watch it from then on."""
        child = _Child(name, start, stop)
        child.process = start()
        child.started_at = time.monotonic()
        self._children.append(child)
        return child.process

    def run(self, interval: float = 0.5) -> None:
        """Watch the children until SIGINT, SIGTERM or SIGHUP, then return (to `stop_all`)."""
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
        try:
            while not stop.wait(interval):
                self.check()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def check(self) -> None:
        """One look at every child: schedule a restart for the dead, start those that are due."""
        for child in self._children:
            now = time.monotonic()
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
                continue
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                if child.failures and now - child.started_at >= self._steady_after:
                    child.failures = 0
                continue
            self._schedule(child, f"exited ({describe_exit(code)})")

    def stop_all(self) -> None:
        """Stop every child, the last started first; each is stopped even if another fails to."""
        for child in reversed(self._children):
            child.restart_at = None
            if child.process is not None and child.process.poll() is None:
                try:
                    child.stop(child.process)
                except Exception as err:  # the others must still be stopped
                    self._report(f"{child.name} did not stop cleanly: {err}")
                    terminate(child.process, timeout=5)

    def _schedule(self, child: _Child, what: str) -> None:
        delay = min(self._first_delay * 2**child.failures, self._max_delay)
        child.failures += 1
        child.restart_at = time.monotonic() + delay
        self._report(f"{child.name} {what}; restarting it in {delay:g}s")

    def _restart(self, child: _Child) -> None:
        child.restart_at = None
        try:
            child.process = child.start()
        except Exception as err:  # a failed start is retried like a crash
            self._schedule(child, f"failed to start ({err})")
            return
        child.started_at = time.monotonic()
        self._report(f"{child.name} restarted (pid {child.process.pid})")

"""What `postmaster.pid` says about an earlier PostgreSQL server on a data dir, and waiting it out.

`pg_ctl status` believes a server runs while its PID answers `kill(pid, 0)`, which a dying or
unreaped (zombie) postmaster still does; PostgreSQL itself refuses to start for the same reason,
and also while any old backend is still attached to the old shared memory. So a restart waits
for what actually matters: the postmaster gone or a zombie, and no process attached to its
segment. Linux reads both from /proc; elsewhere a signal-0 probe stands in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PID_FILE = "postmaster.pid"
# Line 8 of postmaster.pid (PostgreSQL 10+): "starting", "ready", "stopping" or "standby".
STOPPING = "stopping"


@dataclass(frozen=True)
class PidFile:
    pid: int
    shm_id: int | None
    status: str


def read_pid_file(pgdata: Path) -> PidFile | None:
    """The recorded postmaster, or None without a (complete) file."""
    try:
        lines = (pgdata / PID_FILE).read_text().splitlines()
    except FileNotFoundError:
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    shm = lines[6].split() if len(lines) > 6 else []
    return PidFile(
        pid=int(lines[0]),
        shm_id=int(shm[1]) if len(shm) == 2 and shm[1].isdigit() else None,
        status=lines[7].strip() if len(lines) > 7 else "",
    )


def postmaster_alive(pid: int, pgdata: Path) -> bool:
    """A live (not zombie) postmaster with this PID, serving `pgdata` (not a reused PID)."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            return False
        # The state follows the ")" that closes the command name, which may itself hold spaces.
        state = stat.rsplit(")", 1)[1].split()[0]
        return (
            state not in ("Z", "X")
            and os.path.basename(argv[0]) == b"postgres"
            and os.fsencode(pgdata) in argv
        )
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def attached_processes(shm_id: int | None) -> int:
    """How many processes are attached to the old server's System V segment (0 if it is gone)."""
    if shm_id is None:
        return 0
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()
    except FileNotFoundError:
        return 0
    header = rows[0].split()
    for row in rows[1:]:
        fields = dict(zip(header, row.split(), strict=False))
        if fields.get("shmid") == str(shm_id):
            return int(fields.get("nattch", "0"))
    return 0


def await_gone(pgdata: Path, *, stop_live: bool, timeout: float = 20.0) -> bool:
    """Settle what an earlier server left on `pgdata` before a new one starts.

    Returns True if a live server is running there and may be reused (only when not `stop_live`).
    Otherwise asks a live one to shut down fast (`stop_live`: it belongs to no one, as when the
    caller holds the data dir lock), waits, seconds rather than tens, for the postmaster and its
    backends to be gone, and removes a pid file that would still name a zombie or a reused PID.
    """
    record = read_pid_file(pgdata)
    if record is None:
        return False
    if postmaster_alive(record.pid, pgdata) and record.status != STOPPING:
        if not stop_live:
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while postmaster_alive(record.pid, pgdata) or attached_processes(record.shm_id):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the PostgreSQL server (PID {record.pid}) of {pgdata} did not stop in {timeout:g}s"
            )
        time.sleep(0.1)
    # Nothing uses the data dir now; PostgreSQL would still refuse a file naming a zombie.
    current = read_pid_file(pgdata)
    if current is not None and current.pid == record.pid:
        (pgdata / PID_FILE).unlink(missing_ok=True)
    return False

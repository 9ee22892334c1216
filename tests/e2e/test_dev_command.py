"""`blocks dev`, the quick start: everything comes up, serves a run, stops cleanly, and restarts as is."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.support import EXPENSE, free_port

_KEY = re.compile(r"^(owner|approver)\s+\([^)]+\):\s+(blk_\S+)$", re.MULTILINE)


def _env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_")},
        "BLOCKS_DATA_DIR": str(data_dir),
        "BLOCKS_API_PORT": str(ports["api"]),
        "BLOCKS_POSTGRES_PORT": str(ports["pg"]),
        "BLOCKS_TEMPORAL_PORT": str(ports["temporal"]),
        "BLOCKS_TEMPORAL_UI_PORT": str(ports["ui"]),
        "COLUMNS": "200",
    }


def _start(data_dir: Path, ports: dict[str, int], log: Path) -> subprocess.Popen[bytes]:
    env = _env(data_dir, ports)
    return subprocess.Popen(
        [sys.executable, "-m", "blocks.cli", "dev"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_ready(api: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if (
                httpx.get(f"{api}/readyz", timeout=2).status_code == 200
                and "Ctrl-C" in log.read_text()
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"blocks dev never became ready:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> list[int]:
    """Interrupt like Ctrl-C; return the pids of descendants that outlived it."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    time.sleep(0.5)
    return [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_dev_runs_everything_and_restarts_on_the_same_data(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("api", "pg", "temporal", "ui")}
    api = f"http://127.0.0.1:{ports['api']}"
    data_dir = tmp_path / "data"
    first_log = tmp_path / "first.log"

    process = _start(data_dir, ports, first_log)
    try:
        _wait_ready(api, process, first_log)
        keys = dict(_KEY.findall(first_log.read_text()))
        assert set(keys) == {"owner", "approver"}, first_log.read_text()
        owner = {"Authorization": f"Bearer {keys['owner']}"}
        approver = {"Authorization": f"Bearer {keys['approver']}"}
        run = httpx.post(
            f"{api}/v1/runs", json={"workflow": "expense_approval", "input": EXPENSE}, headers=owner
        )
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        for _ in range(200):
            if httpx.get(f"{api}/v1/runs/{run_id}", headers=owner).json()["pending_steps"]:
                break
            time.sleep(0.1)
        decided = httpx.post(
            f"{api}/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=approver,
            timeout=30,
        )
        assert decided.status_code == 200, decided.text
        assert httpx.get(f"http://127.0.0.1:{ports['ui']}/", timeout=5).status_code == 200
        # Another key for a demo member, minted beside the running stack as the README says.
        minted = subprocess.run(
            [sys.executable, "-m", "blocks.cli", "api-key", "--org", "demo",
             "--email", "approver@demo.example", "--role", "approver"],
            env=_env(data_dir, ports), capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        assert minted.startswith("blk_")
        inbox = httpx.get(
            f"{api}/v1/inbox", headers={"Authorization": f"Bearer {minted}"}, timeout=30
        )
        assert inbox.status_code == 200
        # Without email, an operator sets the demo owner's password; the owner then signs in.
        password = "demo owner passphrase, long enough 42"
        subprocess.run(
            [sys.executable, "-m", "blocks.cli", "set-password", "--email", "Owner@demo.example"],
            input=f"{password}\n{password}\n", env=_env(data_dir, ports),
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        signed = httpx.post(
            f"{api}/v1/auth/signin",
            json={"email": "owner@demo.example", "password": password},
            timeout=30,
        )
        assert signed.status_code == 200, signed.text
        assert [o["slug"] for o in signed.json()["organizations"]] == ["demo"]
        weak = subprocess.run(
            [sys.executable, "-m", "blocks.cli", "set-password", "--email", "owner@demo.example"],
            input="password1\npassword1\n", env=_env(data_dir, ports),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert weak.returncode == 1
        created = subprocess.run(
            [sys.executable, "-m", "blocks.cli", "create-org", "--slug", "acme", "--name", "Acme",
             "--owner-email", "owner@demo.example"],
            env=_env(data_dir, ports), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "Organization acme created" in created.stdout
        again = httpx.post(
            f"{api}/v1/auth/signin",
            json={"email": "owner@demo.example", "password": password},
            timeout=30,
        )
        assert {o["slug"] for o in again.json()["organizations"]} == {"demo", "acme"}
        # The platform chain (sign-ins, operator actions) exports and verifies offline.
        exported = tmp_path / "platform.jsonl"
        subprocess.run(
            [sys.executable, "-m", "blocks.cli", "audit", "export", "--platform",
             "--out", str(exported)],
            env=_env(data_dir, ports), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert '"action":"auth.signin"' in exported.read_text().replace(" ", "")
        verified = subprocess.run(
            [sys.executable, "-m", "blocks.cli", "audit", "verify", str(exported)],
            env=_env(data_dir, ports), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        leftovers = _stop(process)
    assert leftovers == []
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()

    second_log = tmp_path / "second.log"
    process = _start(data_dir, ports, second_log)
    try:
        _wait_ready(api, process, second_log)
        assert "already exists" in second_log.read_text()
        assert _KEY.findall(second_log.read_text()) == []
        # The first start's data and key survived the restart.
        body = httpx.get(f"{api}/v1/runs/{run_id}", headers=owner, timeout=30).json()
        assert body["status"] == "completed", body
    finally:
        assert _stop(process) == []

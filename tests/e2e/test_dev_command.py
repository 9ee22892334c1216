"""`blocks dev`, the quick start: everything comes up, serves a run, stops cleanly, and restarts as
is; keys and organizations made from the command line are audited like the API's."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.dev_process import KEY_LINE, DevStack, stop
from tests.support import EXPENSE

AGENT_LINE = re.compile(r"^agent\s+\(invoice-agent\):\s+(blkagent_\S+)$", re.MULTILINE)


def _events(stack: DevStack, key: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{stack.api}/v1/audit-events",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["events"])


def _key_ids(stack: DevStack, key: str) -> dict[str, str]:
    """Key name -> key id, for every key of the caller's organization."""
    answer = httpx.get(
        f"{stack.api}/v1/api-keys",
        params={"all": "true"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return {k["name"]: k["id"] for k in answer.json()}


def _made_by(events: list[dict[str, Any]], command: str, action: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["action"] == action and e["actor_type"] == "system" and e["actor_id"] == command
    ]


def test_dev_runs_everything_and_restarts_on_the_same_data(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "data")
    api, data_dir, ports = stack.api, stack.data_dir, stack.ports
    first_log = tmp_path / "first.log"

    process = stack.start(first_log)
    try:
        stack.wait_ready(process, first_log)
        keys = dict(KEY_LINE.findall(first_log.read_text()))
        assert set(keys) == {"owner", "approver"}, first_log.read_text()
        # The example agent, registered in the demo organization, and its token, shown once.
        [agent_token] = AGENT_LINE.findall(first_log.read_text())
        agent_session = httpx.get(
            f"{api}/v1/agent/session",
            headers={"Authorization": f"Bearer {agent_token}"},
            timeout=30,
        )
        assert agent_session.status_code == 200, agent_session.text
        assert agent_session.json()["agent"] == "invoice-agent"
        assert agent_session.json()["skills"] == ["check-vendor", "extract-totals"]
        assert agent_session.json()["dev_mode"] is False
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
        # The UI decodes through the API's codec endpoint, which answers its page's origins.
        ui_settings = httpx.get(f"http://127.0.0.1:{ports['ui']}/api/v1/settings", timeout=5)
        assert ui_settings.json()["Codec"]["Endpoint"] == f"{api}/v1/codec"
        for ui in (f"http://127.0.0.1:{ports['ui']}", f"http://localhost:{ports['ui']}"):
            preflight = httpx.options(
                f"{api}/v1/codec/decode",
                headers={"Origin": ui, "Access-Control-Request-Method": "POST"},
            )
            assert preflight.headers["access-control-allow-origin"] == ui
        # Another key for a demo member, minted beside the running stack as the README says.
        made = stack.cli(
            "api-key", "--org", "demo", "--email", "approver@demo.example", "--role", "approver",
            "--name", "minted by an operator",
        )  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
        minted = made.stdout.strip().splitlines()[-1]
        assert minted.startswith("blk_")
        inbox = httpx.get(
            f"{api}/v1/inbox", headers={"Authorization": f"Bearer {minted}"}, timeout=30
        )
        assert inbox.status_code == 200
        # Keys made from the command line leave the event API-made keys do, the command as actor.
        key_ids = _key_ids(stack, keys["owner"])
        events = _events(stack, keys["owner"])
        by_dev = _made_by(events, "cli:dev", "api_key.created")
        assert {(e["target_type"], e["target_id"]) for e in by_dev} == {
            ("api_key", key_ids["demo owner"]),
            ("api_key", key_ids["demo approver"]),
        }
        assert {e["data"]["name"]: e["data"]["roles"] for e in by_dev} == {
            "demo owner": ["owner"],
            "demo approver": ["approver"],
        }
        assert [e["target_id"] for e in _made_by(events, "cli:dev", "org.created")] != []
        [by_cli] = _made_by(events, "cli:api-key", "api_key.created")
        assert by_cli["target_id"] == key_ids["minted by an operator"]
        assert set(by_cli["data"]) == {"name", "owner_user_id", "roles", "expires_at"}
        assert by_cli["data"]["roles"] == ["approver"]
        # Without email, an operator sets the demo owner's password; the owner then signs in.
        password = "demo owner passphrase, long enough 42"
        changed = stack.cli(
            "set-password", "--email", "Owner@demo.example", stdin=f"{password}\n{password}\n"
        )
        assert changed.returncode == 0, changed.stdout + changed.stderr
        signed = httpx.post(
            f"{api}/v1/auth/signin",
            json={"email": "owner@demo.example", "password": password},
            timeout=30,
        )
        assert signed.status_code == 200, signed.text
        assert [o["slug"] for o in signed.json()["organizations"]] == ["demo"]
        weak = stack.cli(
            "set-password", "--email", "owner@demo.example", stdin="password1\npassword1\n"
        )
        assert weak.returncode == 1
        created = stack.cli(
            "create-org", "--slug", "acme", "--name", "Acme", "--owner-email", "owner@demo.example"
        )
        assert "Organization acme created" in created.stdout, created.stdout + created.stderr
        # The new organization's chain opens with its creation by the command, then the key.
        acme_key = (
            stack.cli(
                "api-key", "--org", "acme", "--email", "owner@demo.example", "--role", "owner"
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        acme_events = _events(stack, acme_key)
        assert [(e["action"], e["actor_id"]) for e in acme_events] == [
            ("org.created", "cli:create-org"),
            ("api_key.created", "cli:api-key"),
        ]
        assert acme_events[1]["target_id"] == _key_ids(stack, acme_key)["cli"]
        again = httpx.post(
            f"{api}/v1/auth/signin",
            json={"email": "owner@demo.example", "password": password},
            timeout=30,
        )
        assert {o["slug"] for o in again.json()["organizations"]} == {"demo", "acme"}
        # The platform chain (sign-ins, operator actions) exports and verifies offline.
        exported = tmp_path / "platform.jsonl"
        assert stack.cli("audit", "export", "--platform", "--out", str(exported)).returncode == 0
        assert '"action":"auth.signin"' in exported.read_text().replace(" ", "")
        verified = stack.cli("audit", "verify", str(exported))
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        leftovers = stop(process)
    assert leftovers == []
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()

    second_log = tmp_path / "second.log"
    process = stack.start(second_log)
    try:
        stack.wait_ready(process, second_log)
        assert "already exists" in second_log.read_text()
        assert KEY_LINE.findall(second_log.read_text()) == []
        assert AGENT_LINE.findall(second_log.read_text()) == []
        # The first start's data and key survived the restart.
        body = httpx.get(f"{api}/v1/runs/{run_id}", headers=owner, timeout=30).json()
        assert body["status"] == "completed", body
    finally:
        assert stop(process) == []

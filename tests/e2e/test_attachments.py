"""Attachments on a run, against the real API, PostgreSQL and Temporal: a file's kind is what its
bytes are (a PE named invoice.pdf, HTML sent as image/png and a zip bomb dressed as a docx are
refused, saying what they are; an oversized file is a 413); a real PDF is accepted, stored sealed,
downloaded only as an attachment with its detected type, and the decision that names it carries
its SHA-256 in its audit event. Other organizations see a 404; a member who may not read runs, or
an auditor trying to upload, gets a 403 that is audited. Comments are sanitized on input."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from blocks.infra.db import bind_org, session_factory
from tests.support import EXPENSE, Org, Stack, audit_actions, make_org, wait_for_audit
from tests.support import wait_for_status as _wait_for_status
from tests.unit.test_file_types import PE, minimal_pdf, zip_bomb


async def _awaiting_approval(http: httpx.AsyncClient, org: Org) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=org["operator"].headers,
    )
    assert started.status_code in (200, 201, 202), started.text
    run_id = str(started.json()["id"])
    await _wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def _upload(
    http: httpx.AsyncClient, run_id: str, headers: dict[str, str], name: str, body: bytes, ct: str
) -> httpx.Response:
    return await http.post(
        f"/v1/runs/{run_id}/attachments", files={"file": (name, body, ct)}, headers=headers
    )


def _refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return dict(response.json())


async def _denials(stack: Stack, org: Org) -> int:
    return sum(
        1
        for action, outcome, _ in await audit_actions(stack.engine, org.id)
        if action == "access.denied" and outcome == "denied"
    )


async def _stored(stack: Stack, org_id: uuid.UUID, attachment_id: str) -> tuple[bytes, str]:
    async with session_factory(stack.engine)() as session, session.begin():
        await bind_org(session, org_id)
        row = (
            await session.exec(  # type: ignore[call-overload]
                text("SELECT sealed, sha256 FROM attachments WHERE id = :id").bindparams(
                    id=uuid.UUID(attachment_id)
                )
            )
        ).one()
        return bytes(row[0]), str(row[1])


async def test_files_are_judged_by_their_bytes_and_the_approved_one_is_in_the_log(
    stack: Stack,
) -> None:
    org = await make_org(stack.engine)
    approver = org["approver"]
    pdf = minimal_pdf()
    async with stack.http() as http:
        run_id = await _awaiting_approval(http, org)

        pe = _refused(
            await _upload(http, run_id, approver.headers, "invoice.pdf", PE, "application/pdf"),
            422,
        )
        assert pe["errors"][0]["field"] == "file"
        assert "not a PDF as sent (application/pdf)" in pe["detail"]
        assert "Windows executable (PE)" in pe["detail"]

        page = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
        html = _refused(
            await _upload(http, run_id, approver.headers, "cat.png", page, "image/png"), 422
        )
        assert "not a PNG as sent (image/png)" in html["detail"]
        assert "HTML" in html["detail"]

        limit = stack.settings.attachment_max_bytes
        big = _refused(
            await _upload(
                http, run_id, approver.headers, "big.pdf", b"%PDF-1.4\n" + bytes(limit), "a/b"
            ),
            413,
        )
        assert big["code"] == "file_too_large"
        assert big["errors"] == [{"field": "file", "reason": f"larger than {limit} bytes"}]

        bomb = _refused(
            await _upload(http, run_id, approver.headers, "contract.docx", zip_bomb(), "x/y"), 422
        )
        assert "decompression bomb" in bomb["detail"]

        accepted = await _upload(
            http, run_id, approver.headers, "../../Invoice\u202e 2025.pdf", pdf, "text/html"
        )
        assert accepted.status_code == 201, accepted.text
        attachment = accepted.json()
        digest = hashlib.sha256(pdf).hexdigest()
        assert attachment["sha256"] == digest
        assert attachment["media_type"] == "application/pdf"  # the bytes', not the client's
        assert attachment["name"] == "Invoice 2025.pdf"
        assert attachment["size"] == len(pdf)

        # Stored sealed: the table holds no readable PDF.
        sealed, stored_digest = await _stored(stack, org.id, attachment["id"])
        assert stored_digest == digest
        assert b"%PDF" not in sealed
        assert pdf not in sealed

        listed = await http.get(f"/v1/runs/{run_id}/attachments", headers=org["auditor"].headers)
        assert listed.status_code == 200, listed.text
        assert [a["id"] for a in listed.json()["attachments"]] == [attachment["id"]]

        url = f"/v1/runs/{run_id}/attachments/{attachment['id']}"
        download = await http.get(url, headers=org["auditor"].headers)
        assert download.status_code == 200, download.text
        assert download.content == pdf
        assert download.headers["content-type"] == "application/pdf"
        assert download.headers["x-content-type-options"] == "nosniff"
        assert download.headers["cache-control"] == "no-store"
        assert download.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert download.headers["content-disposition"] == (
            "attachment; filename=\"Invoice 2025.pdf\"; filename*=UTF-8''Invoice%202025.pdf"
        )

        # Another member's file cannot be named; then the approver's own decision names theirs.
        theirs = await _upload(http, run_id, org["operator"].headers, "notes.txt", b"hi", "t/p")
        assert theirs.status_code == 201, theirs.text
        not_mine = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve", "attachment_ids": [theirs.json()["id"]]},
            headers=approver.headers,
        )
        assert _refused(not_mine, 422)["errors"][0]["field"] == "attachment_ids.0"

        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={
                "decision": "approve",
                "comment": "OK <img src=x onerror=alert(1)><a href='javascript:alert(1)'>see</a>",
                "attachment_ids": [attachment["id"]],
            },
            headers=approver.headers,
        )
        assert decided.status_code == 200, decided.text
        await wait_for_audit(stack.engine, org.id, "step.decided", run_id=run_id)
        events = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        assert events.status_code == 200, events.text
        by_action = {e["action"]: e for e in events.json()["events"]}
        decision = by_action["step.decided"]["data"]
        assert decision["attachments"] == [
            {
                "id": attachment["id"],
                "name": "Invoice 2025.pdf",
                "sha256": digest,
                "size": len(pdf),
                "media_type": "application/pdf",
            }
        ]
        assert decision["comment"] == 'OK <a rel="noopener noreferrer nofollow">see</a>'
        uploads = [e for e in events.json()["events"] if e["action"] == "attachment.uploaded"]
        assert {
            "name": "Invoice 2025.pdf",
            "media_type": "application/pdf",
            "kind": "pdf",
            "size": len(pdf),
            "sha256": digest,
        } in [e["data"] for e in uploads]

        after = await http.get(f"/v1/runs/{run_id}/attachments", headers=approver.headers)
        [named] = [a for a in after.json()["attachments"] if a["id"] == attachment["id"]]
        assert (named["step_id"], named["decision"]) == ("approve", "approve")


async def test_other_organizations_and_readers_without_the_right_are_kept_out(
    stack: Stack,
) -> None:
    org = await make_org(stack.engine)
    other = await make_org(stack.engine)
    async with stack.http() as http:
        run_id = await _awaiting_approval(http, org)
        uploaded = await _upload(
            http, run_id, org["operator"].headers, "rows.csv", b"a,b\n1,2\n", "text/csv"
        )
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["media_type"] == "text/csv; charset=utf-8"
        url = f"/v1/runs/{run_id}/attachments/{uploaded.json()['id']}"

        # Another organization: the run and its file do not exist (404), for reading or adding.
        for response in (
            await http.get(url, headers=other["owner"].headers),
            await http.get(f"/v1/runs/{run_id}/attachments", headers=other["owner"].headers),
            await _upload(http, run_id, other["owner"].headers, "x.txt", b"x", "text/plain"),
        ):
            assert _refused(response, 404)["code"] == "not_found"
        # Another run of the same organization does not reach it either.
        elsewhere = await _awaiting_approval(http, org)
        wrong_run = await http.get(
            f"/v1/runs/{elsewhere}/attachments/{uploaded.json()['id']}",
            headers=org["auditor"].headers,
        )
        _refused(wrong_run, 404)

        # A member who may not read runs: 403, audited.
        before = await _denials(stack, org)
        _refused(await http.get(url, headers=org["nobody"].headers), 403)
        assert await _denials(stack, org) == before + 1
        # An auditor reads runs but neither starts nor decides: may not add a file (403, audited).
        refused = await _upload(http, run_id, org["auditor"].headers, "a.txt", b"a", "text/plain")
        assert "run:start" in _refused(refused, 403)["detail"]
        assert await _denials(stack, org) == before + 2


async def test_an_admin_narrows_the_kinds_the_organization_accepts(stack: Stack) -> None:
    org = await make_org(stack.engine)
    async with stack.http() as http:
        run_id = await _awaiting_approval(http, org)
        default = await http.get("/v1/org/attachments", headers=org["approver"].headers)
        assert default.status_code == 200, default.text
        assert "pdf" in default.json()["allowed_kinds"]
        assert "text" in default.json()["allowed_kinds"]
        _refused(
            await http.put(
                "/v1/org/attachments",
                json={"allowed_kinds": ["pdf"]},
                headers=org["operator"].headers,
            ),
            403,
        )
        bad = await http.put(
            "/v1/org/attachments", json={"allowed_kinds": ["exe"]}, headers=org["admin"].headers
        )
        assert _refused(bad, 422)["errors"][0]["field"].startswith("allowed_kinds")
        narrowed = await http.put(
            "/v1/org/attachments", json={"allowed_kinds": ["pdf"]}, headers=org["admin"].headers
        )
        assert narrowed.status_code == 200, narrowed.text
        assert narrowed.json()["allowed_kinds"] == ["pdf"]
        text_file = await _upload(
            http, run_id, org["operator"].headers, "n.txt", b"hello", "text/plain"
        )
        assert "does not accept" in _refused(text_file, 422)["detail"]
        pdf = await _upload(
            http, run_id, org["operator"].headers, "a.pdf", minimal_pdf(), "application/pdf"
        )
        assert pdf.status_code == 201, pdf.text
    actions = [action for action, _, _ in await audit_actions(stack.engine, org.id)]
    assert "org.attachments_changed" in actions

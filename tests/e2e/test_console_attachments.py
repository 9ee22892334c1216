"""A run's request and files in the console, over real HTTP as a browser sends its forms: the run
and step pages show the input the run started with and its attachments (digest, uploader,
download link); a real PDF attached to an approval from the step page is named, with its
SHA-256, in the decision's audit event; a PE renamed invoice.pdf is refused in the API's words
and decides and stores nothing; an upload from another origin is refused (CSRF) and audited."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from tests.e2e.test_console_decisions import EVIL
from tests.support import (
    EXPENSE,
    Org,
    Stack,
    audit_actions,
    make_org,
    run_sql,
    signed_in_headers,
    wait_for_audit,
    wait_for_status,
)
from tests.unit.test_file_types import PE, minimal_pdf


async def _start(http: httpx.AsyncClient, org: Org, workflow: str, params: Any) -> str:
    started = await http.post(
        "/v1/runs", json={"workflow": workflow, "input": params}, headers=org["operator"].headers
    )
    assert started.status_code == 201, started.text
    run_id: str = started.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def _attachments(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    listed = await http.get(f"/v1/runs/{run_id}/attachments", headers=org["auditor"].headers)
    assert listed.status_code == 200, listed.text
    return list(listed.json()["attachments"])


async def _votes(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    run = (await http.get(f"/v1/runs/{run_id}", headers=org["owner"].headers)).json()
    return [e for s in run["steps"] for e in s["history"] if e["event"] == "decided"]


async def _events(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    events = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert events.status_code == 200, events.text
    return list(events.json()["events"])


async def test_the_pages_show_the_request_and_a_pdf_approved_there_is_in_the_log(
    stack: Stack,
) -> None:
    org = await make_org(stack.engine)
    # A PDF past the 1 MB any other form may send (a comment after its end, as scanners pad):
    # the decision form takes an upload's size.
    pdf = minimal_pdf() + b"%" + b"0" * (1536 * 1024) + b"\n"
    digest = hashlib.sha256(pdf).hexdigest()
    notes = b"Delivery note 4711\n"
    async with stack.http() as http:
        run_id = await _start(http, org, "expense_approval", EXPENSE)
        step_url = f"/console/runs/{run_id}/steps/approve"
        approver = await signed_in_headers(stack, org, "approver")
        operator = await signed_in_headers(stack, org, "operator")

        for url, who in ((step_url, approver), (f"/console/runs/{run_id}", operator)):
            page = await http.get(url, headers=who)
            assert page.status_code == 200, page.text
            assert '<dl class="facts run-input" id="run-input">' in page.text
            for key, value in EXPENSE.items():
                assert f"<dt>{key}</dt>\n  <dd>{value}</dd>" in page.text
            assert "No file is attached to this run." in page.text
        step_page = await http.get(step_url, headers=approver)
        assert 'enctype="multipart/form-data"' in step_page.text
        assert '<label for="decision-file">Attach a file' in step_page.text
        assert 'name="file" type="file"' in step_page.text

        # The operator attaches a note from the run page's own form; the page lists it.
        attached = await http.post(
            f"/console/runs/{run_id}/attachments",
            files={"file": ("note.txt", notes, "text/plain")},
            headers=operator,
        )
        assert attached.status_code == 303, attached.text
        assert attached.headers["location"] == f"/console/runs/{run_id}?done=attached"
        shown = await http.get(attached.headers["location"], headers=operator)
        assert "The file was attached to the run." in shown.text
        assert hashlib.sha256(notes).hexdigest() in shown.text
        assert f"{len(notes)} bytes" in shown.text
        assert org["operator"].email in shown.text

        # The approver approves with the invoice attached through the step page's form.
        approved = await http.post(
            step_url,
            data={"decision": "approve", "comment": "Invoice checked"},
            files={"file": ("invoice.pdf", pdf, "application/pdf")},
            headers=approver,
        )
        assert approved.status_code == 303, approved.text
        assert approved.headers["location"] == "/console/inbox?done=approved"
        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"]["status"] == "approved"

        await wait_for_audit(stack.engine, org.id, "step.decided", run_id=run_id)
        [decided] = [e for e in await _events(http, org, run_id) if e["action"] == "step.decided"]
        [invoice] = [a for a in await _attachments(http, org, run_id) if a["name"] == "invoice.pdf"]
        assert decided["data"]["attachments"] == [
            {
                "id": invoice["id"],
                "name": "invoice.pdf",
                "sha256": digest,
                "size": len(pdf),
                "media_type": "application/pdf",
            }
        ]

        # Both pages list it: its digest in full, who uploaded it, the decision naming it, and a
        # link to the API's download, which the session cookie opens.
        download = f"/v1/runs/{run_id}/attachments/{invoice['id']}"
        for url in (f"/console/runs/{run_id}", step_url):
            page = await http.get(url, headers=operator)
            assert page.status_code == 200, page.text
            assert f'<a href="{download}" class="attachment-link">invoice.pdf</a>' in page.text
            assert f'<code class="digest-full">{digest}</code>' in page.text
            assert f'title="{digest}">{digest[:12]}…</code>' in page.text
            assert org["approver"].email in page.text
            assert "approve on step approve" in page.text
            assert "1.5 MB" in page.text
        got = await http.get(download, headers=approver)
        assert got.status_code == 200, got.text
        assert got.content == pdf
        assert got.headers["content-disposition"].startswith("attachment;")


async def test_refused_uploads_from_the_console_change_nothing(stack: Stack) -> None:
    org = await make_org(stack.engine)
    purchase = {
        "amount": "25000.00",
        "description": "Annual licence",
        "finance": [str(org["approver2"].user_id), str(org["operator_approver"].user_id)],
        "legal": [str(org["admin"].user_id)],
        "director": str(org["approver"].user_id),
    }
    async with stack.http() as http:
        run_id = await _start(http, org, "purchase_approval", purchase)
        step_url = f"/console/runs/{run_id}/steps/review"
        run_url = f"/console/runs/{run_id}"
        approver = await signed_in_headers(stack, org, "approver2")

        page = await http.get(step_url, headers=approver)
        assert page.status_code == 200, page.text
        assert "<dt>description</dt>\n  <dd>Annual licence</dd>" in page.text
        # A list is shown as indented JSON, as text.
        finance = str(org["approver2"].user_id)
        assert f'<dt>finance</dt>\n  <dd><pre class="data">[\n  &#34;{finance}&#34;,' in page.text

        # A Windows executable named invoice.pdf, with an approval: the API's refusal, no vote.
        pe = await http.post(
            step_url,
            data={"decision": "approve", "comment": "see the invoice"},
            files={"file": ("invoice.pdf", PE, "application/pdf")},
            headers=approver,
        )
        assert pe.status_code == 422, pe.text
        assert "not a PDF as sent (application/pdf)" in pe.text
        assert "Windows executable (PE)" in pe.text
        assert 'id="decision-file"' in pe.text
        assert 'aria-invalid="true"' in pe.text
        assert "see the invoice</textarea>" in pe.text  # the form, as filled
        # The same from the run page's form; and that form sent without a file.
        for files, reason in (
            ({"file": ("invoice.pdf", PE, "application/pdf")}, "Windows executable (PE)"),
            ({"file": ("", b"", "application/octet-stream")}, "choose a file to attach"),
        ):
            refused = await http.post(f"{run_url}/attachments", files=files, headers=approver)
            assert refused.status_code == 422, refused.text
            assert reason in refused.text
            assert "Annual licence" in refused.text  # the run page, shown again

        # An auditor reads the run but may not add to it: the API's 403, audited.
        auditor = await signed_in_headers(stack, org, "auditor")
        assert 'id="upload-file"' not in (await http.get(run_url, headers=auditor)).text
        denied = await http.post(
            f"{run_url}/attachments",
            files={"file": ("notes.txt", b"hello", "text/plain")},
            headers=auditor,
        )
        assert denied.status_code == 403, denied.text
        assert "your roles grant neither run:start nor step:decide" in denied.text

        # From another site, with the approver's own cookie: refused before anything is read.
        for url in (f"{run_url}/attachments", step_url):
            evil = await http.post(
                url,
                data={"decision": "approve"},
                files={"file": ("invoice.pdf", minimal_pdf(), "application/pdf")},
                headers={**approver, "Origin": EVIL},
            )
            assert evil.status_code == 403, evil.text
            assert "must come from this site" in evil.text

        assert await _votes(http, org, run_id) == []
        assert await _attachments(http, org, run_id) == []

        # As if Temporal's retention had passed: the page says the input is no longer kept.
        await run_sql(
            stack.engine,
            "UPDATE runs SET workflow_id = 'run-gone-' || id::text WHERE id = CAST(:run AS uuid)",
            org=org.id,
            run=run_id,
        )
        gone = await http.get(run_url, headers=auditor)
        assert gone.status_code == 200, gone.text
        assert "Temporal no longer keeps this run's input." in gone.text
        assert 'id="run-input"' not in gone.text
    audit = await audit_actions(stack.engine, org.id)
    assert "attachment.uploaded" not in [action for action, _, _ in audit]
    denials = [reason for action, _, reason in audit if action == "access.denied"]
    assert denials.count("csrf: cross-origin request refused") == 2
    assert "missing permission run:start or step:decide" in denials

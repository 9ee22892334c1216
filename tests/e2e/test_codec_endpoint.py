"""The codec endpoint (api.approvals.codec) against the real API and Temporal: a run's history
payloads decode for the operators and auditors of its organization only (by API key, by session,
and through `temporal workflow show --codec-endpoint`); approvers and other organizations are
refused and audited; a tampered payload is a 422; encode then decode round-trips; CORS and the
session's origin check open to the configured Temporal UI origins, on these two routes only."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import httpx
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.common.v1 import Payload

from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.embedded.temporal import temporal_cli_path
from blocks.infra.temporal.payload_codec import payload_org
from tests.support import (
    EXPENSE,
    Org,
    Stack,
    audit_actions,
    cookie_headers,
    make_org,
    running_stack,
    start_test_session,
    wait_for_status,
)

DECODE = "/v1/codec/decode"
ENCODE = "/v1/codec/encode"
UI = "http://127.0.0.1:18233"


async def _run_with_marker(stack: Stack, http: httpx.AsyncClient, org: Org) -> tuple[str, str]:
    marker = f"codec-marker-{uuid.uuid4().hex[:10]}"
    started = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": {**EXPENSE, "description": marker}},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id, marker


async def _input_payloads(stack: Stack, run_id: str) -> list[Payload]:
    """The run's input as Temporal holds it: ciphertext under the organization's key."""
    history = await stack.temporal.get_workflow_handle(f"run-{run_id}").fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    return list(started.input.payloads)


def _body(payloads: list[Payload]) -> dict[str, Any]:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def _data(answer: httpx.Response) -> list[bytes]:
    return [base64.b64decode(p.get("data", "")) for p in answer.json()["payloads"]]


async def test_operators_and_auditors_decode_their_runs_history(stack: Stack) -> None:
    org = await make_org(stack.engine)
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"left":"as is"}')
    async with stack.http() as http:
        run_id, marker = await _run_with_marker(stack, http, org)
        sealed = await _input_payloads(stack, run_id)
        assert [payload_org(p) for p in sealed] == [org.id]
        assert marker.encode() not in sealed[0].data
        token = await start_test_session(stack.engine, org["auditor"].user_id, org.id)
        for headers in (
            org["operator"].headers,
            org["auditor"].headers,
            org["owner"].headers,
            cookie_headers(stack.settings, token),
        ):
            # The UI's own request: a query string, the namespace header.
            answer = await http.post(
                f"{DECODE}?preserveStorageRefs=true",
                json=_body([*sealed, plain]),
                headers={**headers, "X-Namespace": "default"},
            )
            assert answer.status_code == 200, answer.text
            data = _data(answer)
            assert marker.encode() in data[0]
            assert data[1] == plain.data
            metadata = answer.json()["payloads"][0]["metadata"]
            assert base64.b64decode(metadata["encoding"]) == b"json/plain"


async def test_the_temporal_cli_shows_a_run_decoded_with_an_api_key(stack: Stack) -> None:
    org = await make_org(stack.engine)
    async with stack.http() as http:
        run_id, marker = await _run_with_marker(stack, http, org)

    async def show(key: str) -> str:
        # The CLI calls the codec as the UI does (POST {endpoint}/decode, X-Namespace), its
        # Authorization header given by --codec-auth.
        process = await asyncio.create_subprocess_exec(
            temporal_cli_path(), "workflow", "show", "--workflow-id", f"run-{run_id}",
            "--address", stack.temporal.service_client.config.target_host,
            "--codec-endpoint", f"{stack.base_url}/v1/codec", "--codec-auth", f"Bearer {key}",
            "--detailed",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        return output.decode()

    assert marker in await show(org["auditor"].key)
    refused = await show(org["approver"].key)  # the CLI gives up on the 403s: no history shown
    assert "Error:" in refused
    assert marker not in refused


async def test_approvers_and_other_organizations_are_refused_and_audited(stack: Stack) -> None:
    org = await make_org(stack.engine)
    other = await make_org(stack.engine)
    async with stack.http() as http:
        run_id, marker = await _run_with_marker(stack, http, org)
        sealed = await _input_payloads(stack, run_id)

        approver = await http.post(DECODE, json=_body(sealed), headers=org["approver"].headers)
        assert approver.status_code == 403
        assert approver.headers["content-type"] == "application/problem+json"
        assert marker not in approver.text
        assert (
            "access.denied",
            "denied",
            "missing permission run:decode",
        ) in await audit_actions(stack.engine, org.id)

        # The other organization's operator holds run:decode, but not this organization's key.
        mine = Payload(metadata={"encoding": b"json/plain"}, data=b"{}")
        foreign = await http.post(
            DECODE, json=_body([mine, *sealed]), headers=other["operator"].headers
        )
        assert foreign.status_code == 403
        assert foreign.headers["content-type"] == "application/problem+json"
        assert "payloads[1]" in foreign.json()["detail"]
        assert marker not in foreign.text
        assert (
            "access.denied",
            "denied",
            "codec: payloads[1] is sealed under another organization's key",
        ) in await audit_actions(stack.engine, other.id)

        # Sealed under the deployment's payload keys (Blocks' own workflows): nobody's to read.
        codec = stack.temporal.data_converter.payload_codec
        assert codec is not None
        deployment = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"1")])
        unowned = await http.post(DECODE, json=_body(deployment), headers=org["owner"].headers)
        assert unowned.status_code == 403
        assert "payloads[0]" in unowned.json()["detail"]


async def test_a_tampered_payload_is_422_naming_it(stack: Stack) -> None:
    org = await make_org(stack.engine)
    async with stack.http() as http:
        run_id, marker = await _run_with_marker(stack, http, org)
        sealed = await _input_payloads(stack, run_id)
        tampered = Payload()
        tampered.CopyFrom(sealed[0])
        tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
        answer = await http.post(
            DECODE, json=_body([sealed[0], tampered]), headers=org["operator"].headers
        )
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["field"] == "payloads[1]"
        assert marker not in answer.text
        # Cut short, down to no nonce at all: refused the same way, never a server error.
        for kept in (20, 0):
            cut = Payload()
            cut.CopyFrom(sealed[0])
            cut.data = cut.data[:kept]
            short = await http.post(DECODE, json=_body([cut]), headers=org["operator"].headers)
            assert short.status_code == 422, short.text
            assert short.json()["errors"][0]["field"] == "payloads[0]"

        not_base64 = await http.post(
            DECODE,
            json={"payloads": [{"metadata": {"encoding": "%%%"}, "data": ""}]},
            headers=org["operator"].headers,
        )
        assert not_base64.status_code == 422
        too_many = await http.post(
            DECODE, json={"payloads": [{}] * 1001}, headers=org["operator"].headers
        )
        assert too_many.status_code == 422


async def test_encode_seals_under_the_callers_organization_and_decodes_back(
    stack: Stack,
) -> None:
    org = await make_org(stack.engine)
    other = await make_org(stack.engine)
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"signal":"hello"}')
    async with stack.http() as http:
        encoded = await http.post(ENCODE, json=_body([original]), headers=org["operator"].headers)
        assert encoded.status_code == 200, encoded.text
        sealed = json_format.ParseDict(encoded.json()["payloads"][0], Payload())
        assert sealed.metadata["encoding"] == b"binary/encrypted"
        assert payload_org(sealed) == org.id
        assert b"hello" not in sealed.data

        decoded = await http.post(DECODE, json=encoded.json(), headers=org["auditor"].headers)
        assert decoded.status_code == 200, decoded.text
        back = json_format.ParseDict(decoded.json()["payloads"][0], Payload())
        assert back == original

        stolen = await http.post(DECODE, json=encoded.json(), headers=other["owner"].headers)
        assert stolen.status_code == 403
        refused = await http.post(ENCODE, json=_body([original]), headers=org["approver"].headers)
        assert refused.status_code == 403


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }


async def test_cors_and_the_origin_check_open_to_the_listed_ui_origins_on_these_routes_only(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    other_ui = "http://localhost:18233"
    async with (
        running_stack(
            engine=engine,
            temporal=stack.temporal,
            database_url=postgres.url(),
            task_queue=stack.settings.task_queue,
            with_worker=False,
            publish=False,
            extra_settings={"codec_cors_origins": f"{UI}, {other_ui}"},
        ) as api,
        api.http() as http,
    ):
        for origin in (UI, other_ui):
            answer = await http.options(
                f"{DECODE}?preserveStorageRefs=true", headers=_preflight(origin)
            )
            assert answer.status_code == 204
            assert answer.headers["access-control-allow-origin"] == origin
            assert answer.headers["access-control-allow-credentials"] == "true"
            assert answer.headers["access-control-allow-methods"] == "POST"
            assert answer.headers["access-control-allow-headers"] == (
                "content-type, x-namespace, authorization"
            )
            assert answer.headers["vary"] == "Origin"
        for origin in ("http://127.0.0.1:9999", "https://evil.example", "null"):
            answer = await http.options(DECODE, headers=_preflight(origin))
            assert not any(h.startswith("access-control-") for h in answer.headers), origin
        # Another route of the API: no CORS for the UI's origin.
        answer = await http.options("/v1/runs", headers=_preflight(UI))
        assert not any(h.startswith("access-control-") for h in answer.headers)

        # The session cookie from the UI's page: accepted here, with CORS on the answer...
        token = await start_test_session(engine, org["operator"].user_id, org.id)
        from_ui = {**cookie_headers(api.settings, token), "Origin": UI}
        plain = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "e30="}]}
        decoded = await http.post(DECODE, json=plain, headers=from_ui)
        assert decoded.status_code == 200, decoded.text
        assert decoded.headers["access-control-allow-origin"] == UI
        assert decoded.headers["access-control-allow-credentials"] == "true"
        # ...but a refusal is readable by the page too (the UI shows the codec failed).
        unsigned = await http.post(DECODE, json=plain, headers={"Origin": UI})
        assert unsigned.status_code == 401
        assert unsigned.headers["access-control-allow-origin"] == UI
        # ...and refused from an origin not listed (CSRF), audited.
        elsewhere = {**from_ui, "Origin": "https://evil.example"}
        csrf = await http.post(DECODE, json=plain, headers=elsewhere)
        assert csrf.status_code == 403
        assert csrf.json()["code"] == "csrf"
        assert "access-control-allow-origin" not in csrf.headers
        denied = ("access.denied", "denied", "csrf: cross-origin request refused")
        assert denied in await audit_actions(engine, org.id)
        # ...and the UI's origin is no origin for the rest of the API.
        start = await http.post(
            "/v1/runs", json={"workflow": "expense_approval", "input": EXPENSE}, headers=from_ui
        )
        assert start.status_code == 403
        assert start.json()["code"] == "csrf"
        assert "access-control-allow-origin" not in start.headers
    async with stack.http() as http:
        # The session stack lists no codec origin: the UI's origin is refused there.
        token = await start_test_session(engine, org["operator"].user_id, org.id)
        refused = await http.post(
            DECODE,
            json=plain,
            headers={**cookie_headers(stack.settings, token), "Origin": UI},
        )
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers

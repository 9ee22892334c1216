"""Hostile input at the edge (api.request_limits, api.params): each refused with a 4xx
problem+json naming the field and the reason, never a 500 or a dropped connection, and nothing
written. The limits' own numbers are small here (a stack of its own), so their refusals are
cheap to provoke; the session's stack shows the defaults at work."""

from __future__ import annotations

import asyncio
import codecs
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.support import EXPENSE, Org, Stack, make_org, row_counts, running_stack

BIGINT_PAST = "9223372036854775808"  # one past PostgreSQL's bigint
START = {"workflow": "expense_approval", "input": EXPENSE}


def _problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert [e["field"] for e in body["errors"]] == [field], body
        assert body["errors"][0]["reason"]
    return body  # type: ignore[no-any-return]


@pytest.fixture
async def org(engine: AsyncEngine) -> Org:
    return await make_org(engine)


@asynccontextmanager
async def _stack_with(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    settings: dict[str, object],
) -> AsyncIterator[Stack]:
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-hostile-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings=settings,
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def small_limits(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """The API with small body limits (the session's invalid-request limit is generous)."""
    limits = {"max_body_bytes": 4096, "max_json_depth": 8, "max_json_members": 50}
    async with _stack_with(engine, temporal_env, postgres, limits) as running:
        yield running


@pytest.fixture(scope="module")
async def few_invalid(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """The API allowing 3 invalid requests a minute from one address."""
    limits = {"rate_limit_invalid_ip": "3/minute"}
    async with _stack_with(engine, temporal_env, postgres, limits) as running:
        yield running


# --------------------------------------------------------------------------- integers


@pytest.mark.parametrize(
    "path", ["/v1/audit-events", "/v1/audit/checkpoints", "/v1/runs/{run}/audit-events"]
)
async def test_a_seq_past_bigint_is_422_and_the_largest_is_read(
    stack: Stack, org: Org, path: str
) -> None:
    async with stack.http() as http:
        started = await http.post("/v1/runs", json=START, headers=org["operator"].headers)
        assert started.status_code == 201, started.text
        url = path.format(run=started.json()["id"])
        headers = org["auditor"].headers
        _problem(
            await http.get(url, params={"after_seq": BIGINT_PAST}, headers=headers),
            422,
            "after_seq",
        )
        largest = await http.get(url, params={"after_seq": int(BIGINT_PAST) - 1}, headers=headers)
        assert largest.status_code == 200, largest.text


# --------------------------------------------------------------------------- NUL characters


async def test_a_nul_in_an_export_filter_is_422_before_anything_is_sent(
    stack: Stack, org: Org
) -> None:
    async with stack.http() as http:
        for name in ("actor_id", "action"):
            response = await http.get(
                "/v1/audit/export", params={name: "a\x00b"}, headers=org["auditor"].headers
            )
            _problem(response, 422, name)
        # The parameter's name is checked as well as its value.
        response = await http.get("/v1/audit/export?act%00or=1", headers=org["auditor"].headers)
        _problem(response, 422, "act\\0or")


async def test_a_nul_in_the_path_a_cookie_or_a_json_string_is_422(
    stack: Stack, engine: AsyncEngine, org: Org
) -> None:
    before = await row_counts(engine, org.id)
    headers = org["operator"].headers
    async with stack.http() as http:
        _problem(await http.get("/v1/runs/%00", headers=headers), 422, "path")
        cookie = {**headers, "Cookie": '__Host-blocks_session="a\\000b"'}
        _problem(await http.get("/v1/runs", headers=cookie), 422, "cookie __Host-blocks_session")
        body = {"workflow": "expense_approval", "input": {**EXPENSE, "description": "x\x00y"}}
        _problem(await http.post("/v1/runs", json=body, headers=headers), 422, "input.description")
        # A decision-link form (the one urlencoded body the API reads) is checked too.
        response = await http.post(
            "/v1/decision-links/anything",
            content="decision=approve&comment=%00",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        _problem(response, 422, "comment")
    assert await row_counts(engine, org.id) == before


async def test_a_lone_surrogate_in_json_is_422(stack: Stack, engine: AsyncEngine, org: Org) -> None:
    # JSON may escape half of a UTF-16 pair; no UTF-8 text (nor PostgreSQL) can hold it.
    before = await row_counts(engine, org.id)
    headers = {**org["operator"].headers, "content-type": "application/json"}
    async with stack.http() as http:
        for body, field in [
            ('{"workflow": "expense_approval", "input": {"\\udfff": 1}}', "input.\\udfff"),
            ('{"workflow": "expense_\\ud800", "input": {}}', "workflow"),
        ]:
            response = await http.post("/v1/runs", content=body, headers=headers)
            problem = _problem(response, 422, field)
            assert "surrogate" in str(problem["detail"])
    assert await row_counts(engine, org.id) == before


async def _raw_request(stack: Stack, request: bytes) -> bytes:
    """Send bytes no HTTP client would, and read the answer (the server closes after it)."""
    url = urlsplit(stack.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_nul_in_a_header_is_refused(stack: Stack, org: Org) -> None:
    key = org["operator"].key
    answer = await _raw_request(
        stack,
        b"GET /v1/runs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Authorization: Bearer {key}\r\n".encode()
        + b"X-Client: a\x00b\r\n\r\n",
    )
    status = int(answer.split(b" ", 2)[1])
    # The HTTP parser itself may refuse the request (400) before the app sees it; if it lets it
    # through, the app's answer is a 422 naming the header.
    assert status in (400, 422), answer
    if status == 422:
        assert b"header x-client" in answer


# --------------------------------------------------------------------------- JSON encoding


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps(START).encode("utf-16"), "application/json"),
        (json.dumps(START).encode("utf-16-le"), "application/json"),
        (json.dumps(START).encode("utf-32"), "application/json"),
        (codecs.BOM_UTF8 + json.dumps(START).encode(), "application/json"),
        (json.dumps(START).encode(), "application/json; charset=utf-16"),
        (
            json.dumps(
                {**START, "input": {**EXPENSE, "description": "caf\xe9"}}, ensure_ascii=False
            ).encode("latin-1"),
            "application/json",
        ),
    ],
    ids=["utf-16", "utf-16-le-no-bom", "utf-32", "utf-8-bom", "charset-utf-16", "latin-1"],
)
async def test_json_that_is_not_utf8_is_415(
    stack: Stack, engine: AsyncEngine, org: Org, body: bytes, content_type: str
) -> None:
    before = await row_counts(engine, org.id)
    async with stack.http() as http:
        response = await http.post(
            "/v1/runs",
            content=body,
            headers={**org["operator"].headers, "content-type": content_type},
        )
    problem = _problem(response, 415)
    assert problem["code"] == "unsupported_encoding"
    assert "UTF-8" in str(problem["detail"])
    assert await row_counts(engine, org.id) == before


async def test_duplicate_keys_are_422_naming_the_key(
    stack: Stack, engine: AsyncEngine, org: Org
) -> None:
    before = await row_counts(engine, org.id)
    async with stack.http() as http:
        for body, key in [
            ('{"workflow": "payroll", "workflow": "expense_approval", "input": {}}', "workflow"),
            (
                '{"workflow": "expense_approval", "input": {"amount": "1", "amount": "9000", '
                '"currency": "EUR", "description": "x"}}',
                "amount",
            ),
        ]:
            response = await http.post(
                "/v1/runs",
                content=body,
                headers={**org["operator"].headers, "content-type": "application/json"},
            )
            problem = _problem(response, 422, key)
            assert "more than once" in str(problem["detail"])
    assert await row_counts(engine, org.id) == before


@pytest.mark.parametrize(
    "body",
    [
        '{"workflow": NaN}',
        '{"workflow": -Infinity}',
        '{"workflow": 1e99999}',
        '{"workflow": ' + "9" * 5000 + "}",
        "[[[",
        '{"workflow": "expense_approval",}',
    ],
    ids=[
        "nan",
        "infinity",
        "overflowing-float",
        "5000-digit-integer",
        "unclosed",
        "trailing-comma",
    ],
)
async def test_what_is_not_json_is_400(stack: Stack, org: Org, body: str) -> None:
    async with stack.http() as http:
        response = await http.post(
            "/v1/runs",
            content=body,
            headers={**org["operator"].headers, "content-type": "application/json"},
        )
    problem = _problem(response, 400)
    assert problem["code"] == "malformed_json"
    assert "not valid JSON" in str(problem["detail"])


# --------------------------------------------------------------------------- size, depth, members


async def test_a_200000_member_object_is_413_at_the_default_limits(stack: Stack, org: Org) -> None:
    members = ",".join(f'"k{i}": 1' for i in range(200_000))
    async with stack.http() as http:
        response = await http.post(
            "/v1/runs",
            content="{" + members + "}",
            headers={**org["operator"].headers, "content-type": "application/json"},
        )
    # 2.6 MB: past the default 1 MiB before its members are even counted.
    assert _problem(response, 413)["code"] == "too_large"


async def test_bodies_past_the_limits_are_413(small_limits: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    headers = {**org["operator"].headers, "content-type": "application/json"}
    async with small_limits.http() as http:
        many = "{" + ",".join(f'"k{i}": 1' for i in range(60)) + "}"
        deep = '{"workflow": "expense_approval", "input": ' + '{"a": ' * 9 + "1" + "}" * 10
        large = json.dumps({**START, "input": {**EXPENSE, "description": "x" * 5000}})
        for body, code in [(many, "too_many_members"), (deep, "too_deep"), (large, "too_large")]:
            response = await http.post("/v1/runs", content=body, headers=headers)
            assert _problem(response, 413)["code"] == code

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: the limit holds for a body streamed in chunks too.
            for _ in range(10):
                yield b" " * 1000

        response = await http.post("/v1/runs", content=chunks(), headers=headers)
        assert _problem(response, 413)["code"] == "too_large"
        # Strings may hold brackets and commas: only the structure counts.
        fine = json.dumps({**START, "input": {**EXPENSE, "description": "[{," * 100}})
        response = await http.post("/v1/runs", content=fine, headers=headers)
        assert response.status_code == 201, response.text


async def test_edge_refusals_count_as_invalid_requests(
    few_invalid: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    headers = org["operator"].headers
    async with few_invalid.http() as http:
        for _ in range(3):
            response = await http.get("/v1/runs", params={"x": "\x00"}, headers=headers)
            _problem(response, 422, "x")
        # A fourth is one too many from this address: its refusal is audited (once), and the
        # NUL of its path must not reach the audit log's insert (a 500 if it did).
        response = await http.get("/v1/runs/%00", headers=headers)
        assert _problem(response, 429)["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1
        # Whatever the kind of invalid request.
        response = await http.post(
            "/v1/runs", content="{", headers={**headers, "content-type": "application/json"}
        )
        assert _problem(response, 429)["code"] == "rate_limited"


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/runs", "GET, POST"),
        ("PUT", "/v1/audit/checkpoints", "GET, POST"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_405_names_the_allowed_methods(
    stack: Stack, method: str, path: str, allow: str
) -> None:
    async with stack.http() as http:
        response = await http.request(method, path)
    _problem(response, 405)
    assert response.headers["allow"] == allow

"""The LLM adapter (infra.integrations.llm) through the real `openai` SDK against a real local
OpenAI-compatible server in a process of its own (tests/servers/openai_compatible.py).

Each failing call must be one request (the SDK's retries are off: Temporal owns retrying), be
marked retryable or not as the status says, and carry no trace of the API key."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import httpx
import pytest
from httpx_secure import httpx_ssrf_protection

from blocks.infra.integrations.llm import (
    ChatMessage,
    ModelCall,
    ModelCallFailed,
    ModelReply,
    call_model,
)
from blocks.infra.integrations.outbound_http import OutboundPolicy, guarded_client
from tests.servers.openai_compatible import running_openai_server
from tests.support import free_port

APIS: tuple[Literal["chat", "responses"], ...] = ("chat", "responses")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_openai_server() as base_url:
        yield base_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        yield client


def _key(kind: str) -> str:
    return f"sk-{kind}-{uuid.uuid4().hex}"


def _call(api: Literal["chat", "responses"], marker: str, **limits: Any) -> ModelCall:
    messages = (
        ChatMessage("system", "You draft short replies."),
        ChatMessage("user", f"Summarise expense {marker} for the approver"),
    )
    return ModelCall(api=api, model="gpt-test", messages=messages, **limits)


def _seen(server: str, marker: str) -> list[dict[str, Any]]:
    """What the server received for the calls carrying `marker`."""
    answer = httpx.get(server.removesuffix("/v1") + "/_requests", timeout=5)
    answer.raise_for_status()
    return [entry for entry in answer.json() if marker in entry["text"]]


async def _ask(
    server: str,
    http: httpx.AsyncClient,
    key: str,
    call: ModelCall,
    *,
    timeout_seconds: float = 30,
) -> ModelReply:
    return await call_model(
        call, base_url=server, api_key=key, http_client=http, timeout_seconds=timeout_seconds
    )


async def _fails(
    server: str, http: httpx.AsyncClient, key: str, call: ModelCall, **options: float
) -> ModelCallFailed:
    """The failure of one call, checked to hold no trace of the key (nor the SDK's exception,
    which holds the request and its Authorization header)."""
    with pytest.raises(ModelCallFailed) as raised:
        await _ask(server, http, key, call, **options)
    failure = raised.value
    for text in (str(failure), repr(failure), failure.reason, repr(failure.args)):
        assert key not in text
    assert failure.__cause__ is None
    assert failure.__context__ is None
    return failure


@pytest.mark.parametrize("api", APIS)
async def test_a_call_answers_with_text_model_and_usage(
    server: str, http: httpx.AsyncClient, api: Literal["chat", "responses"]
) -> None:
    marker, key = uuid.uuid4().hex, _key("ok")
    reply = await _ask(server, http, key, _call(api, marker))
    assert reply.text == f"draft: Summarise expense {marker} for the approver"
    assert reply.model == "gpt-test-local"  # as the server reports it, not as asked
    assert reply.input_tokens == 4 + 6  # the server counts words: system, then user
    assert reply.output_tokens == 7
    assert reply.finish_reason == ("stop" if api == "chat" else "completed")
    assert reply.latency_ms >= 0
    path = "/v1/chat/completions" if api == "chat" else "/v1/responses"
    [request] = _seen(server, marker)
    assert request == {
        "key": key[-4:],
        "path": path,
        "model": "gpt-test",
        "text": f"You draft short replies.\nSummarise expense {marker} for the approver",
        "attempt": 0,
        "status": 200,
    }


@pytest.mark.parametrize(
    ("api", "finish"), [("chat", "length"), ("responses", "max_output_tokens")]
)
async def test_the_output_limit_reaches_the_server(
    server: str, http: httpx.AsyncClient, api: Literal["chat", "responses"], finish: str
) -> None:
    marker = uuid.uuid4().hex
    reply = await _ask(server, http, _key("ok"), _call(api, marker, max_output_tokens=3))
    assert reply.text == "draft: Summarise expense"
    assert reply.output_tokens == 3
    assert reply.finish_reason == finish


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("status", "said"),
    [
        (401, "Incorrect API key provided: [redacted]."),
        (403, "Country, region, or territory not supported."),
        # The 400 quotes the prompt back, as content-policy refusals do.
        (400, "Invalid prompt: "),
    ],
)
async def test_a_refusal_fails_at_once_and_not_retryable(
    server: str, http: httpx.AsyncClient, api: Literal["chat", "responses"], status: int, said: str
) -> None:
    # The 401 answer quotes the whole key back: the reason must carry it redacted.
    marker, key = uuid.uuid4().hex, _key(str(status))
    failure = await _fails(server, http, key, _call(api, marker))
    assert failure.retryable is False
    assert failure.status == status
    assert failure.reason.startswith(f"the model server refused the call: HTTP {status}: {said}")
    assert failure.retry_after is None
    assert [r["status"] for r in _seen(server, marker)] == [status]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("kind", "status", "retry_after"), [("500x1", 500, None), ("429x1", 429, 1.0)]
)
async def test_a_server_error_or_rate_limit_is_one_retryable_attempt(
    server: str,
    http: httpx.AsyncClient,
    api: Literal["chat", "responses"],
    kind: str,
    status: int,
    retry_after: float | None,
) -> None:
    marker, key = uuid.uuid4().hex, _key(kind)
    failure = await _fails(server, http, key, _call(api, marker))
    assert failure.retryable is True
    assert failure.status == status
    assert failure.reason.startswith(f"the model server temporarily failed: HTTP {status}: ")
    assert failure.retry_after == retry_after
    # One call, one request: the SDK did not retry on its own.
    assert [(r["attempt"], r["status"]) for r in _seen(server, marker)] == [(0, status)]
    # The caller's retry (Temporal's, in production) is what succeeds.
    reply = await _ask(server, http, key, _call(api, marker))
    assert reply.text.startswith("draft: ")
    assert [(r["attempt"], r["status"]) for r in _seen(server, marker)] == [(0, status), (0, 200)]


@pytest.mark.parametrize("api", APIS)
async def test_a_slow_answer_times_out_retryable(
    server: str, http: httpx.AsyncClient, api: Literal["chat", "responses"]
) -> None:
    marker, key = uuid.uuid4().hex, _key("slowx1")
    failure = await _fails(server, http, key, _call(api, marker), timeout_seconds=1)
    assert failure.retryable is True
    assert failure.status is None
    assert failure.reason.endswith("did not answer within 1 s")
    assert len(_seen(server, marker)) == 1
    reply = await _ask(server, http, key, _call(api, marker), timeout_seconds=1)
    assert reply.text.startswith("draft: ")


@pytest.mark.parametrize("api", APIS)
async def test_a_redirect_is_not_followed(
    server: str, http: httpx.AsyncClient, api: Literal["chat", "responses"]
) -> None:
    marker, key = uuid.uuid4().hex, _key("307")
    failure = await _fails(server, http, key, _call(api, marker), timeout_seconds=5)
    assert failure.retryable is False
    assert failure.status == 307
    assert "redirect to http://169.254.169.254/v1/chat/completions" in failure.reason
    assert "not followed" in failure.reason
    assert len(_seen(server, marker)) == 1


async def test_a_client_that_follows_redirects_is_refused(server: str) -> None:
    marker = uuid.uuid4().hex
    async with httpx.AsyncClient(follow_redirects=True) as following:
        with pytest.raises(ValueError, match="must not follow redirects"):
            await _ask(server, following, _key("ok"), _call("chat", marker))
    assert _seen(server, marker) == []


async def test_a_server_that_is_not_there_is_retryable(http: httpx.AsyncClient) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    key = _key("ok")
    failure = await _fails(nowhere, http, key, _call("chat", "x"), timeout_seconds=5)
    assert failure.retryable is True
    assert failure.status is None
    assert failure.reason.startswith(f"could not reach the model server at {nowhere[7:-3]} (")


async def test_an_address_the_ssrf_guard_refuses_is_not_retryable(server: str) -> None:
    marker, key = uuid.uuid4().hex, _key("ok")
    async with httpx_ssrf_protection(httpx.AsyncClient(follow_redirects=False)) as guarded:
        failure = await _fails(server, guarded, key, _call("chat", marker), timeout_seconds=5)
    assert failure.retryable is False
    assert "refused to connect to the model server at 127.0.0.1:" in failure.reason
    assert "not globally reachable" in failure.reason
    assert _seen(server, marker) == []  # no request reached the loopback server


async def test_blocks_guarded_client_refusing_at_call_time_is_not_retryable(server: str) -> None:
    marker, key = uuid.uuid4().hex, _key("ok")
    async with guarded_client(OutboundPolicy(frozenset()), timeout=5) as guarded:
        failure = await _fails(server, guarded, key, _call("chat", marker), timeout_seconds=5)
    assert failure.retryable is False
    assert "refused to connect to the model server" in failure.reason
    assert _seen(server, marker) == []


@pytest.mark.parametrize("kind", ["ok", "401", "500x1"])
async def test_the_key_is_in_no_log_even_at_debug_level(
    server: str, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    key = _key(kind)
    caplog.set_level(logging.DEBUG)
    with contextlib.suppress(ModelCallFailed):
        await _ask(server, http, key, _call("chat", uuid.uuid4().hex))
    assert "/v1/chat/completions" in caplog.text  # the SDK's and httpx's debug lines are there
    assert key not in caplog.text


@pytest.mark.parametrize("api", APIS)
async def test_an_answer_not_in_openai_shape_is_not_retryable(
    server: str, http: httpx.AsyncClient, api: Literal["chat", "responses"]
) -> None:
    failure = await _fails(server, http, _key("html"), _call(api, uuid.uuid4().hex))
    assert failure.retryable is False
    assert failure.status is None
    assert "answered 200 but not with an OpenAI" in failure.reason

"""LLM adapter: one model call through the official `openai` SDK, to any OpenAI-compatible server.

`call_model` speaks Chat Completions or Responses and returns the text with its token usage. The
SDK's own retries are off (`max_retries=0`): the caller (a Temporal activity) owns retrying, so a
failure is raised at once as `ModelCallFailed`, marked retryable (429, 5xx, 408, timeouts,
connection errors) or not (any other 4xx, a redirect, an address the SSRF guard refuses, an answer
that is not OpenAI's shape). Its message names the status and the server's own message, and never
holds the API key: the key is scrubbed from everything the server said, and the SDK's exception
is not chained (it holds the request, headers and all).

The caller gives the HTTP client (the organization's SSRF-guarded one), which must not follow
redirects. openai 3.x runs on the `httpx2` fork but also takes a plain `httpx.AsyncClient`
(its `_httpx2.is_legacy_httpx_async_client`), which is what Blocks passes.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx
import httpx_secure

from blocks.infra.integrations.outbound_http import OutboundURLRefused
from blocks.infra.lazy_modules import lazy_module

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

# The SDK and its generated types are about 35 MB resident and 1.5 s to import: only a worker
# that runs an LLM step pays for them, at its first call.
openai = lazy_module("openai")

_MESSAGE_LIMIT = 500  # characters of the server's error message kept in a reason
_REDACTED = "[redacted]"

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class ModelCall:
    """What to ask: which API, which model, the conversation, and optional limits."""

    api: Literal["chat", "responses"]
    model: str
    messages: tuple[ChatMessage, ...]
    max_output_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class ModelReply:
    """The model's answer. `model` is the name the server reports (often a dated snapshot of
    the name asked for); `finish_reason` is Chat's ("stop", "length", ...) or, for Responses,
    the status ("completed") or why it is incomplete ("max_output_tokens")."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None
    latency_ms: int


class ModelCallFailed(Exception):
    """A model call that did not produce a reply. `reason` is safe to show and to log (no key);
    `summary` is the reason without the server's own words, which may quote the prompt."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        summary: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.summary = summary or reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


async def call_model(
    call: ModelCall,
    *,
    base_url: str,
    api_key: str,
    http_client: httpx.AsyncClient,
    timeout_seconds: float,
) -> ModelReply:
    """Ask the model once (no retries here); raise `ModelCallFailed` if it does not answer."""
    if http_client.follow_redirects:
        # A redirect would carry the key to wherever the server points (the SSRF guard checks
        # each address, but the Authorization header would still go along).
        raise ValueError("the HTTP client for model calls must not follow redirects")
    client = openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=timeout_seconds,
        http_client=http_client,
    )
    # Read from OPENAI_ORG_ID / OPENAI_PROJECT_ID when not given: the worker's own OpenAI
    # account is none of the organization's server's business.
    client.organization = None
    client.project = None
    # The client is not closed: closing it would close the caller's http_client. The SDK
    # imports each API's resources on first use: they are resolved before the clock starts.
    if call.api == "chat":
        create, arguments = client.chat.completions.create, _chat_arguments(call)
    else:
        create, arguments = client.responses.create, _responses_arguments(call)
    started = time.monotonic()
    failure: ModelCallFailed
    try:
        answer = await create(**arguments)
    except OutboundURLRefused as exc:
        # Blocks' guarded client refused the address at connect time (it passes the SDK
        # unwrapped): the address will not become one an organization may reach.
        failure = ModelCallFailed(
            f"refused to connect to the model server at {_host(base_url)}: {exc.reason}",
            retryable=False,
        )
    except openai.APIStatusError as exc:
        failure = _status_failure(exc.response, exc.body, exc.message, api_key)
    except openai.APITimeoutError:
        failure = ModelCallFailed(
            f"the model server at {_host(base_url)} did not answer within {timeout_seconds:g} s",
            retryable=True,
        )
    except openai.APIConnectionError as exc:
        failure = _connection_failure(exc.__cause__, base_url, api_key)
    except openai.OpenAIError as exc:
        # The SDK could not read the answer.
        failure = ModelCallFailed(
            f"the model server at {_host(base_url)} answered with something the OpenAI SDK "
            f"could not read ({type(exc).__name__}: {_scrub(str(exc), api_key)})",
            summary=f"the model server at {_host(base_url)} answered with something the OpenAI "
            f"SDK could not read ({type(exc).__name__})",
            retryable=False,
        )
    else:
        latency_ms = round((time.monotonic() - started) * 1000)
        try:
            if call.api == "chat":
                return _chat_reply(answer, latency_ms)
            return _responses_reply(answer, latency_ms)
        except (AttributeError, TypeError, IndexError, ValueError):
            # A 200 that is not OpenAI's shape (a proxy's HTML page, an empty object): the SDK
            # hands it over as it came, and retrying will not change it.
            failure = ModelCallFailed(
                f"the model server at {_host(base_url)} answered 200 but not with an OpenAI "
                f"{'Chat Completions' if call.api == 'chat' else 'Responses'} object",
                retryable=False,
            )
    # Raised here, outside the handlers, so the SDK's exception is neither its cause nor its
    # context and nothing it holds (the request, its headers) travels with the failure.
    raise failure


def _chat_arguments(call: ModelCall) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": call.model,
        "messages": [{"role": m.role, "content": m.content} for m in call.messages],
    }
    if call.max_output_tokens is not None:
        # OpenAI's current name: `max_tokens` is deprecated and refused by its reasoning models.
        arguments["max_completion_tokens"] = call.max_output_tokens
    if call.temperature is not None:
        arguments["temperature"] = call.temperature
    return arguments


def _responses_arguments(call: ModelCall) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": call.model,
        "input": [{"role": m.role, "content": m.content} for m in call.messages],
        # Nothing is kept on the provider's side for a later `previous_response_id`.
        "store": False,
    }
    if call.max_output_tokens is not None:
        arguments["max_output_tokens"] = call.max_output_tokens
    if call.temperature is not None:
        arguments["temperature"] = call.temperature
    return arguments


def _chat_reply(completion: ChatCompletion, latency_ms: int) -> ModelReply:
    choice = completion.choices[0]
    usage = completion.usage
    return ModelReply(
        text=choice.message.content or "",
        model=completion.model,
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        finish_reason=choice.finish_reason,
        latency_ms=latency_ms,
    )


def _responses_reply(response: Response, latency_ms: int) -> ModelReply:
    usage = response.usage
    incomplete = response.incomplete_details
    return ModelReply(
        text=response.output_text,
        model=response.model,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        finish_reason=(incomplete.reason if incomplete else None) or response.status,
        latency_ms=latency_ms,
    )


def _status_failure(
    response: httpx.Response, body: object, message: str, api_key: str
) -> ModelCallFailed:
    """A failure for an HTTP answer that was not a success."""
    status = response.status_code
    if 300 <= status < 400:
        location = _scrub(response.headers.get("location", "nowhere"), api_key)[:200]
        return ModelCallFailed(
            f"the model server answered HTTP {status}, a redirect to {location}; "
            "redirects are not followed (check the base URL)",
            retryable=False,
            status=status,
        )
    said = body.get("message") if isinstance(body, dict) else body
    said = _scrub(str(said if said else message), api_key)[:_MESSAGE_LIMIT]
    retryable = status in (408, 429) or status >= 500
    kind = "temporarily failed" if retryable else "refused the call"
    return ModelCallFailed(
        f"the model server {kind}: HTTP {status}: {said}",
        summary=f"the model server {kind}: HTTP {status}",
        retryable=retryable,
        status=status,
        retry_after=_retry_after(response.headers) if retryable else None,
    )


def _connection_failure(
    cause: BaseException | None, base_url: str, api_key: str
) -> ModelCallFailed:
    detail = _scrub(f"{type(cause).__name__}: {cause}", api_key) if cause else "no detail"
    if isinstance(cause, httpx_secure.SSRFProtectionError | OutboundURLRefused):
        # The address is not one an organization may reach: trying again cannot change that.
        return ModelCallFailed(
            f"refused to connect to the model server at {_host(base_url)}: {detail}",
            retryable=False,
        )
    return ModelCallFailed(
        f"could not reach the model server at {_host(base_url)} ({detail})", retryable=True
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks to wait: OpenAI's `retry-after-ms`, else `Retry-After` (seconds
    or an HTTP date)."""
    try:
        if "retry-after-ms" in headers:
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            at = email.utils.parsedate_to_datetime(value)
            return max((at - datetime.now(UTC)).total_seconds(), 0.0)
    except (ValueError, TypeError):
        return None


def _host(base_url: str) -> str:
    """The base URL's host and port: never its user info or query, which could hold a secret."""
    parts = urlsplit(base_url)
    return parts.netloc.rpartition("@")[2] or "the configured base URL"


def _scrub(text: str, api_key: str) -> str:
    return text.replace(api_key, _REDACTED) if api_key else text

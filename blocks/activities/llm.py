"""The LLM step's activity: one model call on the organization's own credential.

`LlmActivities.call_model` loads the credential by name (live only), checks the model against
its allow-list, opens the API key here, inside the activity (the key is never an argument, a
result or an error message, so it never reaches Temporal history), and calls the model once
through the SSRF-guarded client with the SDK's retries off. Temporal owns retrying: a retryable
failure (429, 5xx, timeouts, connection errors) is raised as a retryable ApplicationError (the
server's Retry-After becomes the next delay), anything else as a non-retryable `LlmCallRefused`
naming the reason. Each call is recorded in `llm_usage` once (metadata and hashes; the text only
when the organization retains prompts, sealed under its data key).

The step's argument and result types live here so the workflow side (blocks.workflows.llm_step)
imports them passed-through, as it imports the activity itself.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.crypto.org_keys import OrgKeyUnavailable
from blocks.infra.crypto.run_keys import LLM_CALL_ACTIVITY
from blocks.infra.integrations.llm import ChatMessage, ModelCall, ModelCallFailed, call_model
from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    OutboundURLRefused,
    check_outbound_url,
    guarded_client,
)
from blocks.models.llm.credentials import (
    CredentialKeyUnavailable,
    LlmCredential,
    credential_by_name,
    open_api_key,
)
from blocks.models.llm.retention import prompt_retention, seal_transcript
from blocks.models.llm.usage import (
    OUTCOME_FAILED,
    OUTCOME_OK,
    OUTCOME_REFUSED,
    UsageCall,
    record_usage,
)

# The payload codec seals this activity's input, result and failure under the run's own key.
CALL_MODEL = LLM_CALL_ACTIVITY
# The error type of a call no retry can change; the step's RetryPolicy names it non-retryable.
LLM_CALL_REFUSED = "LlmCallRefused"
LLM_CALL_FAILED = "LlmCallFailed"


@dataclass(frozen=True)
class LlmMessage:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class LlmStepCall:
    """What the workflow asks: never a key, only the credential's name."""

    org_id: str
    run_id: str
    step: str
    credential: str
    model: str
    messages: list[LlmMessage] = field(default_factory=list)
    api: str | None = None  # "chat" or "responses"; None: the credential's default
    max_output_tokens: int | None = None
    temperature: float | None = None
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class LlmReply:
    """The model's answer to an LLM step.

    `model` is the name the server reports (often a dated snapshot of the one asked for);
    `finish_reason` is Chat's ("stop", "length", ...) or, for Responses, its status or why it is
    incomplete. The hashes are SHA-256 (hex) of the prompt (`prompt_sha256`) and the text.
    """

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: int
    finish_reason: str | None
    prompt_sha256: str
    completion_sha256: str


def prompt_sha256(messages: list[LlmMessage]) -> str:
    """SHA-256 of the conversation as canonical JSON: the same prompt, the same hash."""
    canonical = json.dumps(
        [{"role": m.role, "content": m.content} for m in messages],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _refused(reason: str, summary: str | None = None) -> ApplicationError:
    # The first detail is what the step may repeat outside the call (model_failure_summary).
    return ApplicationError(reason, summary or reason, type=LLM_CALL_REFUSED, non_retryable=True)


def model_failure_summary(error: ApplicationError) -> str:
    """What a failed call's error says without the server's own words (which may quote the
    prompt): the step repeats this in its audit event and the run's failure, while the whole
    message stays with the call, sealed under the run's key (destroyed after the run)."""
    if error.details and isinstance(error.details[0], str):
        return error.details[0]
    return error.message


class LlmActivities:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], policy: OutboundPolicy | None = None
    ) -> None:
        self._sessions = sessions
        # No policy: public addresses only (an operator allows private ones by configuration).
        self._policy = policy or OutboundPolicy()

    @activity.defn(name=CALL_MODEL)
    async def call_model(self, call: LlmStepCall) -> LlmReply:
        # The organization is the run's own, which the API resolved when it started the run.
        ctx = OrgContext(
            org_id=OrgId(uuid.UUID(call.org_id)), user_id=None, roles=(), auth=AuthMethod.WORKFLOW
        )
        info = activity.info()
        # One id per activity (not per attempt): a success recorded once stays recorded once.
        call_id = f"{info.workflow_run_id}:{info.activity_id}"
        prompt_hash = prompt_sha256(call.messages)
        credential, api_key, retain = await self._credential(ctx, call, call_id, prompt_hash)
        model_call = ModelCall(
            api="responses" if (call.api or credential.api) == "responses" else "chat",
            model=call.model,
            messages=tuple(ChatMessage(role=m.role, content=m.content) for m in call.messages),  # type: ignore[arg-type]
            max_output_tokens=call.max_output_tokens,
            temperature=call.temperature,
        )
        started = time.monotonic()
        try:
            # Checked again now, not only when saved: what the host resolves to may have changed.
            await check_outbound_url(credential.base_url, self._policy)
            async with guarded_client(self._policy, timeout=call.timeout_seconds) as http:
                reply = await call_model(
                    model_call,
                    base_url=credential.base_url,
                    api_key=api_key,
                    http_client=http,
                    timeout_seconds=call.timeout_seconds,
                )
        except OutboundURLRefused as refused:
            failure = ModelCallFailed(
                f"LLM credential {credential.name!r}: base URL {refused.reason}", retryable=False
            )
        except ModelCallFailed as failed:
            failure = failed
        else:
            completion_hash = hashlib.sha256(reply.text.encode()).hexdigest()
            await self._record(
                ctx,
                (call.messages, reply.text) if retain else None,
                UsageCall(
                    run_id=call.run_id,
                    step=call.step,
                    call_id=call_id,
                    credential_id=credential.id,
                    credential_name=credential.name,
                    model=call.model,
                    served_model=reply.model[:200],
                    outcome=OUTCOME_OK,
                    input_tokens=reply.input_tokens,
                    output_tokens=reply.output_tokens,
                    latency_ms=reply.latency_ms,
                    prompt_sha256=prompt_hash,
                    completion_sha256=completion_hash,
                ),
            )
            return LlmReply(
                text=reply.text,
                model=reply.model,
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                latency_ms=reply.latency_ms,
                finish_reason=reply.finish_reason,
                prompt_sha256=prompt_hash,
                completion_sha256=completion_hash,
            )
        # A failed attempt is recorded too (no tokens), once per attempt.
        await self._record(
            ctx,
            None,
            UsageCall(
                run_id=call.run_id,
                step=call.step,
                call_id=f"{call_id}#{info.attempt}",
                credential_id=credential.id,
                credential_name=credential.name,
                model=call.model,
                outcome=OUTCOME_FAILED if failure.retryable else OUTCOME_REFUSED,
                latency_ms=round((time.monotonic() - started) * 1000),
                prompt_sha256=prompt_hash,
            ),
        )
        if not failure.retryable:
            raise _refused(failure.reason, failure.summary)
        delay = timedelta(seconds=failure.retry_after) if failure.retry_after else None
        raise ApplicationError(
            failure.reason, failure.summary, type=LLM_CALL_FAILED, next_retry_delay=delay
        )

    async def _credential(
        self, ctx: OrgContext, call: LlmStepCall, call_id: str, prompt_hash: str
    ) -> tuple[LlmCredential, str, bool]:
        """The live credential the step names, its key opened, and whether the organization
        retains prompts; refused (non-retryable) when there is no such credential, the model
        is not allowed, or the key does not open."""
        refusal: str
        async with self._sessions() as session, session.begin():
            retain = await prompt_retention(ctx, session)
            credential = await credential_by_name(ctx, session, call.credential)
            if credential is None:
                raise _refused(
                    f"no LLM credential named {call.credential!r} in this organization "
                    "(add one: POST /v1/llm/credentials)"
                )
            if call.model in credential.allowed_models:
                try:
                    return credential, await open_api_key(ctx, session, credential), retain
                except (CredentialKeyUnavailable, OrgKeyUnavailable) as error:
                    refusal = str(error)
            else:
                allowed = ", ".join(credential.allowed_models)
                refusal = (
                    f"model {call.model!r} is not allowed for LLM credential "
                    f"{credential.name!r} (allowed: {allowed})"
                )
            # Committed with the transaction, before the refusal is raised.
            await record_usage(
                ctx,
                session,
                UsageCall(
                    run_id=call.run_id,
                    step=call.step,
                    call_id=f"{call_id}#{activity.info().attempt}",
                    credential_id=credential.id,
                    credential_name=credential.name,
                    model=call.model,
                    outcome=OUTCOME_REFUSED,
                    prompt_sha256=prompt_hash,
                ),
            )
        raise _refused(refusal)

    async def _record(
        self,
        ctx: OrgContext,
        transcript: tuple[list[LlmMessage], str] | None,
        usage: UsageCall,
    ) -> None:
        """Record the call; with `transcript` (prompt retention on), its text sealed too."""
        async with self._sessions() as session, session.begin():
            if transcript is not None:
                messages, completion = transcript
                sealed = await seal_transcript(
                    ctx,
                    session,
                    run_id=usage.run_id,
                    step=usage.step,
                    call_id=usage.call_id,
                    messages=[{"role": m.role, "content": m.content} for m in messages],
                    completion=completion,
                )
                usage = replace(
                    usage,
                    content_key_id=sealed.content_key_id,
                    prompt_sealed=sealed.prompt_sealed,
                    completion_sealed=sealed.completion_sealed,
                )
            await record_usage(ctx, session, usage)

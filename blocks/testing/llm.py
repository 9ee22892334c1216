"""The LLM step under the kit: replies the test scripts, or real calls on a credential it adds.

Scripted (no model server): `WorkflowKit(..., llm_replies=...)` answers each `self.llm(...)`
from the test. Give a mapping of step name to reply text (`{"classify": "urgent"}`; a step it
does not name fails), or a function of the `LlmStepCall` (`.step`, `.model`, `.credential`,
`.messages`; sync or async) returning the text or a whole `LlmReply`. Tokens are counted as
words. To script a failure, raise `ApplicationError(reason, type="LlmCallRefused",
non_retryable=True)` (the step fails at once) or type "LlmCallFailed" (retried as a 5xx is).
The reply is served under the activity's own name, `blocks.llm.call`: replacing an activity
by name is how Temporal's testing guide mocks one, so the workflow runs unchanged.

Real: with `database=` and no script, `await kit.add_llm_credential(base_url=..., api_key=...,
models=[...])` stores a credential in the kit's organization as the API does, and the real
activity (blocks.activities.llm) calls it with the kit's outbound policy: public addresses,
plus the loopback `host:port` of each credential the test added (for this kit only; a
deployment allows private servers with BLOCKS_OUTBOUND_ALLOW_PRIVATE alone).

Either way the workflow audits each call as `llm.called`, `kit.llm_calls(run)` lists what the
run asked, and real calls leave their `llm_usage` rows (`await kit.read_llm_usage(run)`); a
scripted reply records no usage (there is no credential to charge it to). With neither a
script nor a database, a step fails at once saying what the kit needs.
"""

from __future__ import annotations

import hashlib
import inspect
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from ipaddress import ip_address

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from blocks.activities.llm import (
    CALL_MODEL,
    LLM_CALL_REFUSED,
    LlmActivities,
    LlmReply,
    LlmStepCall,
    prompt_sha256,
)
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.integrations.outbound_http import OutboundPolicy, check_outbound_url
from blocks.models.llm.credentials import create_credential
from blocks.models.llm.usage import LlmUsage, UsageFilters, usage_rows

# What a script answers a call with: the reply's text, or a whole LlmReply.
LlmAnswer = str | LlmReply
# `llm_replies=`: a function of the call (sync or async), or the reply text per step name.
LlmScript = Callable[[LlmStepCall], LlmAnswer | Awaitable[LlmAnswer]] | Mapping[str, str]

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_USAGE_LIMIT = 10_000


def _refused(reason: str) -> ApplicationError:
    # The type the step does not retry, as the real activity refuses.
    return ApplicationError(reason, type=LLM_CALL_REFUSED, non_retryable=True)


def _words(text: str) -> int:
    return len(text.split())


def scripted_reply(call: LlmStepCall, text: str) -> LlmReply:
    """The reply a model would give with `text`: the model asked for, tokens counted as words,
    no latency, finish reason "stop", and the hashes the real activity computes."""
    return LlmReply(
        text=text,
        model=call.model,
        input_tokens=sum(_words(m.content) for m in call.messages),
        output_tokens=_words(text),
        latency_ms=0,
        finish_reason="stop",
        prompt_sha256=prompt_sha256(call.messages),
        completion_sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def _loopback_pair(base_url: str) -> tuple[str, int] | None:
    """The (host, port) of a URL on this machine, as the outbound policy names it; else None."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        return None
    host = url.host.lower().removesuffix(".")
    try:
        loopback = ip_address(host).is_loopback
    except ValueError:
        loopback = host in _LOOPBACK_NAMES or host.endswith(".localhost")
    if not loopback:
        return None
    return host, url.port if url.port is not None else (443 if url.scheme == "https" else 80)


class KitLlm:
    """The kit's LLM activity, and what the runs asked of it."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession] | None, replies: LlmScript | None
    ) -> None:
        self._sessions = sessions
        self._replies = replies
        self._allowed: set[tuple[str, int]] = set()
        self._calls: dict[str, list[LlmStepCall]] = defaultdict(list)

    @property
    def policy(self) -> OutboundPolicy:
        """Public addresses, and the loopback servers of the credentials the test added."""
        return OutboundPolicy(frozenset(self._allowed))

    def calls(self, run_id: str) -> list[LlmStepCall]:
        return list(self._calls.get(run_id, ()))

    @activity.defn(name=CALL_MODEL)
    async def call_model(self, call: LlmStepCall) -> LlmReply:
        if activity.info().attempt == 1:  # each step's call once, however often it is retried
            self._calls[call.run_id].append(call)
        if self._replies is not None:
            return await self._scripted(call, self._replies)
        if self._sessions is None:
            raise _refused(
                "the kit has no model: give WorkflowKit(llm_replies=...) to script the replies, "
                "or database=... and `await kit.add_llm_credential(...)` for a model server"
            )
        # Built per call: the policy grows as the test adds credentials after the worker starts.
        return await LlmActivities(self._sessions, self.policy).call_model(call)

    async def _scripted(self, call: LlmStepCall, script: LlmScript) -> LlmReply:
        if isinstance(script, Mapping):
            if call.step not in script:
                scripted = ", ".join(map(repr, script)) or "none"
                raise _refused(
                    f"the kit has no scripted reply for LLM step {call.step!r} "
                    f"(scripted: {scripted})"
                )
            answer: object = script[call.step]
        else:
            try:
                answer = script(call)
                if inspect.isawaitable(answer):
                    answer = await answer
            except ApplicationError:
                raise  # a failure the test scripts on purpose (retryable or not, as it says)
            except Exception as error:
                # A mistake in the script fails the step once, naming it, rather than retrying.
                raise _refused(
                    f"the kit's scripted reply raised {type(error).__name__}: {error}"
                ) from error
        if isinstance(answer, LlmReply):
            return answer
        if isinstance(answer, str):
            return scripted_reply(call, answer)
        raise _refused(
            f"the kit's scripted reply for LLM step {call.step!r} is a "
            f"{type(answer).__name__}, not a str or an LlmReply"
        )

    async def add_credential(
        self,
        org_id: str,
        *,
        name: str,
        base_url: str,
        api_key: str,
        models: list[str],
        api: str,
        provider: str,
    ) -> uuid.UUID:
        """A credential in the organization, made as `POST /v1/llm/credentials` makes it (its
        base URL checked by the SSRF guard first); a loopback server's port is allowed."""
        if self._sessions is None:
            raise RuntimeError(
                "an LLM credential is kept in PostgreSQL: give the kit `database=` (or script "
                "the replies with `llm_replies=`)"
            )
        if self._replies is not None:
            raise RuntimeError(
                "this kit scripts its LLM replies (`llm_replies=`): no credential would be called"
            )
        pair = _loopback_pair(base_url)
        if pair is not None:
            self._allowed.add(pair)
        await check_outbound_url(base_url, self.policy)  # OutboundURLRefused, as the API's 422
        async with self._sessions() as session, session.begin():
            credential = await create_credential(
                _org_context(org_id),
                session,
                name=name,
                provider=provider,
                base_url=base_url,
                api=api,
                allowed_models=list(dict.fromkeys(models)),
                api_key=api_key,
            )
        return credential.id

    async def usage(self, org_id: str, run_id: str) -> list[LlmUsage]:
        """The run's rows of `llm_usage` (real calls only), oldest first."""
        if self._sessions is None:
            raise RuntimeError("LLM usage is kept in PostgreSQL: give the kit `database=`")
        async with self._sessions() as session, session.begin():
            return await usage_rows(
                _org_context(org_id), session, UsageFilters(run_id=run_id), limit=_USAGE_LIMIT
            )


def _org_context(org_id: str) -> OrgContext:
    return OrgContext(
        org_id=OrgId(uuid.UUID(org_id)), user_id=None, roles=(), auth=AuthMethod.SYSTEM
    )

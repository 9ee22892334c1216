"""The LLM step of the author SDK: `await self.llm(...)` asks a model on the organization's own
credential and returns its reply.

`LlmSteps` is a mixin of `BlocksWorkflow`. The call runs as the `blocks.llm.call` activity
(blocks.activities.llm), which opens the credential's key itself: the workflow passes only the
credential's name, so the key never enters history. Temporal retries what is worth retrying
(429, 5xx, timeouts) with backoff; a refusal (400/401/403, a model the credential does not
allow, an address the SSRF guard refuses) fails the step at once. Each call is audited as
`llm.called` with metadata only: credential, model, tokens, latency and the SHA-256 of prompt
and completion, never their text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from blocks.core.audit.records import Outcome

with workflow.unsafe.imports_passed_through():
    from blocks.activities.llm import (
        LLM_CALL_REFUSED,
        LlmActivities,
        LlmMessage,
        LlmReply,
        LlmStepCall,
        model_failure_summary,
        prompt_sha256,
    )

__all__ = ["LLM_STEP_FAILED", "LlmMessage", "LlmReply", "LlmSteps"]

# The error type a failed LLM step raises in the workflow (and fails the run with, uncaught).
LLM_STEP_FAILED = "LlmStepFailed"
LLM_INVALID = "LlmCallInvalid"
_ROLES = frozenset({"system", "user", "assistant"})
# Temporal's own deadline per attempt, past the SDK's: the SDK's timeout says more when it fires.
_ATTEMPT_MARGIN = timedelta(seconds=10)


def _message(item: LlmMessage | Mapping[str, str]) -> LlmMessage:
    if isinstance(item, LlmMessage):
        role, content = item.role, item.content
    elif isinstance(item, Mapping):
        role, content = item.get("role", ""), item.get("content", "")
    else:
        raise _invalid(f"a message is a {{'role', 'content'}} mapping, not {type(item).__name__}")
    if role not in _ROLES:
        raise _invalid(f"a message's role is system, user or assistant, not {role!r}")
    if not isinstance(content, str):
        raise _invalid("a message's content is text")
    return LlmMessage(role=role, content=content)


def _invalid(reason: str) -> ApplicationError:
    return ApplicationError(f"invalid LLM step: {reason}", type=LLM_INVALID, non_retryable=True)


def conversation(
    prompt: str | None,
    messages: Sequence[LlmMessage | Mapping[str, str]] | None,
    system: str | None,
) -> list[LlmMessage]:
    """The messages to send: `system` first, then `messages`, or the `prompt` as the user's."""
    if (prompt is None) == (messages is None):
        raise _invalid("give either a prompt or messages")
    said = (
        [LlmMessage("user", prompt)]
        if prompt is not None
        else [_message(m) for m in messages or ()]
    )
    if not said:
        raise _invalid("messages is empty")
    return [LlmMessage("system", system), *said] if system is not None else said


class LlmSteps:
    """`self.llm(...)` of `BlocksWorkflow`; the hooks are the workflow's."""

    _llm_calls: int = 0

    @property
    def run_input(self) -> Any:
        raise NotImplementedError

    def _audit(self, key: str, action: str, **fields: Any) -> None:
        raise NotImplementedError

    async def _flush(self) -> None:
        raise NotImplementedError

    async def llm(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[LlmMessage | Mapping[str, str]] | None = None,
        system: str | None = None,
        credential: str = "default",
        model: str,
        api: Literal["chat", "responses"] | None = None,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        timeout: timedelta = timedelta(seconds=60),  # noqa: ASYNC109 (each attempt's, Temporal's)
        max_attempts: int = 5,
        step: str | None = None,
    ) -> LlmReply:
        """Ask `model` through the organization's LLM credential named `credential`.

        Give a `prompt` (the user's message, after the `system` instructions if any), or the
        whole conversation as `messages` (`{"role": "system" | "user" | "assistant",
        "content": ...}` mappings or `LlmMessage`s). `api` picks Chat Completions or Responses
        (default: the credential's). `timeout` bounds each attempt; failures worth retrying
        (429, 5xx, timeouts, an unreachable server) are retried with backoff up to
        `max_attempts` attempts in all. A refusal (a bad key, a bad request, a model the
        credential does not allow) is not retried.

        Returns an `LlmReply` (`.text`, `.model` as the server names it, `.input_tokens`,
        `.output_tokens`, `.latency_ms`, `.finish_reason`). A step that does not get a reply
        raises ApplicationError of type `LlmStepFailed` naming why; uncaught, it fails the run.
        `step` names the call in the usage report and the audit log (default `llm-1`,
        `llm-2`, ... in call order). The prompt and reply stay in the run's (encrypted)
        history; PostgreSQL keeps only their SHA-256, tokens and latency.
        """
        self._llm_calls += 1
        number = self._llm_calls
        name = step or f"llm-{number}"
        said = conversation(prompt, messages, system)
        if max_attempts < 1:
            raise _invalid("max_attempts must be at least 1")
        call = LlmStepCall(
            org_id=self.run_input.org_id,
            run_id=self.run_input.run_id,
            step=name,
            credential=credential,
            model=model,
            messages=said,
            api=api,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
            timeout_seconds=timeout.total_seconds(),
        )
        audited: dict[str, object] = {
            "step": name,
            "credential": credential,
            "model": model,
            "prompt_sha256": prompt_sha256(said),
        }
        try:
            reply = await workflow.execute_activity_method(
                LlmActivities.call_model,
                call,
                start_to_close_timeout=timeout + _ATTEMPT_MARGIN,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=60),
                    maximum_attempts=max_attempts,
                    non_retryable_error_types=[LLM_CALL_REFUSED],
                ),
            )
        except ActivityError as error:
            if is_cancelled_exception(error):
                raise
            cause = error.cause
            reason = (
                model_failure_summary(cause)
                if isinstance(cause, ApplicationError)
                else str(cause or error)
            )
            self._audit(
                f"llm:{number}:{name}",
                "llm.called",
                outcome=Outcome.FAILURE,
                # The reason may quote the run (a model's name): it goes in the event's data,
                # which is sealed, not its plain `reason`. The server's own words (which may
                # quote the prompt) stay with the call, under the run's key.
                reason="the model call failed",
                data={**audited, "error": reason},
            )
            await self._flush()
            raise ApplicationError(
                f"LLM step {name!r} failed: {reason}", type=LLM_STEP_FAILED, non_retryable=True
            ) from error
        self._audit(
            f"llm:{number}:{name}",
            "llm.called",
            data={
                **audited,
                "served_model": reply.model,
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
                "latency_ms": reply.latency_ms,
                "finish_reason": reply.finish_reason,
                "completion_sha256": reply.completion_sha256,
            },
        )
        return reply

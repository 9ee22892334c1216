"""Where the LLM step's time goes: each piece of Blocks' activity and workflow timed alone.

One call at a time, the pieces interleaved (one sample of each, then the next round), against the
same PostgreSQL, organization, credential and model server as the side-by-side phases.
"""

from __future__ import annotations

import builtins
import dataclasses
import inspect
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from time import perf_counter, process_time
from types import CodeType
from typing import Any

from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter, WorkflowSerializationContext
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer

from bench.llm_bare import BareLlmCall
from bench.stats import percentile
from blocks.activities.llm import LlmActivities, LlmMessage, LlmReply, LlmStepCall, prompt_sha256
from blocks.core.audit.records import ActorType, AuditBatch, AuditRecord, AuditRecorded
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import session_factory
from blocks.infra.integrations.llm import ChatMessage, ModelCall, call_model
from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    check_outbound_url,
    guarded_client,
)
from blocks.infra.temporal.client import PLAIN_DATA_CONVERTER
from blocks.models.audit.combining import CombiningAppender
from blocks.models.llm.credentials import credential_by_name, open_api_key
from blocks.models.llm.usage import OUTCOME_OK, UsageCall, record_usage
from blocks.workflows.types import RunInput, RunOutcome
from tests.e2e.llm_workflows import LlmDraft

MODEL = "gpt-test"
SYSTEM = "Answer in one line."  # what tests.e2e.llm_workflows.LlmDraft sends
PROMPT = "Summarize expense 4711 (team lunch, 120.50 EUR) for the approver"
TIMEOUT_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Target:
    """The organization, its credential and the model server both sides call."""

    org_id: uuid.UUID
    credential: str
    credential_id: uuid.UUID
    base_url: str
    api_key: str
    policy: OutboundPolicy

    @property
    def ctx(self) -> OrgContext:
        return OrgContext(
            org_id=OrgId(self.org_id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW
        )


class BareLlmActivity:
    """The baseline's activity: the openai SDK straight at the server, one client kept."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)

    @activity.defn(name="bench.bare_llm_call")
    async def call(self, params: dict[str, Any]) -> dict[str, Any]:
        answer = await self.client.chat.completions.create(
            model=params["model"],
            messages=[
                {"role": "system", "content": params["system"]},
                {"role": "user", "content": params["prompt"]},
            ],
            timeout=TIMEOUT_SECONDS,
        )
        usage = answer.usage
        return {
            "text": answer.choices[0].message.content,
            "model": answer.model,
            "input_tokens": usage.prompt_tokens if usage else 0,
            "output_tokens": usage.completion_tokens if usage else 0,
        }


def bare_params() -> dict[str, Any]:
    return {"prompt": PROMPT, "system": SYSTEM, "model": MODEL}


def step_call(org_id: uuid.UUID, run_id: str, credential: str) -> LlmStepCall:
    """What LlmDraft's `self.llm(...)` hands the activity."""
    return LlmStepCall(
        org_id=str(org_id),
        run_id=run_id,
        step="draft",
        credential=credential,
        model=MODEL,
        messages=[LlmMessage("system", SYSTEM), LlmMessage("user", PROMPT)],
        timeout_seconds=TIMEOUT_SECONDS,
    )


def _run_records(run_id: str) -> list[AuditRecord]:
    """The three events an LLM run flushes at its end: run.started, llm.called, run.completed."""
    said = [LlmMessage("system", SYSTEM), LlmMessage("user", PROMPT)]
    common = {"actor_type": ActorType.WORKFLOW, "target_type": "run", "run_id": run_id}
    return [
        AuditRecord(
            action="run.started",
            data={"workflow": "tests_llm_draft", "workflow_version": "1"},
            event_id=str(uuid.uuid4()),
            **common,  # type: ignore[arg-type]
        ),
        AuditRecord(
            action="llm.called",
            data={
                "step": "draft",
                "credential": "default",
                "model": MODEL,
                "prompt_sha256": prompt_sha256(said),
                "served_model": f"{MODEL}-local",
                "input_tokens": 14,
                "output_tokens": 11,
                "latency_ms": 3,
                "finish_reason": "stop",
                "completion_sha256": "0" * 64,
            },
            event_id=str(uuid.uuid4()),
            **common,  # type: ignore[arg-type]
        ),
        AuditRecord(
            action="run.completed",
            data={"status": "drafted", "output_tokens": 11, "finish_reason": "stop"},
            event_id=str(uuid.uuid4()),
            **common,  # type: ignore[arg-type]
        ),
    ]


def _run_payloads(target: Target, run_id: str) -> list[Any]:
    """The values one Blocks LLM run moves through the converter, each once."""
    reply = LlmReply(
        text="draft: " + PROMPT,
        model=f"{MODEL}-local",
        input_tokens=14,
        output_tokens=11,
        latency_ms=3,
        finish_reason="stop",
        prompt_sha256="0" * 64,
        completion_sha256="0" * 64,
    )
    return [
        RunInput(
            org_id=str(target.org_id),
            run_id=run_id,
            workflow_name="tests_llm_draft",
            requested_by=str(uuid.uuid4()),
            params={"prompt": PROMPT, "model": MODEL},
        ),
        step_call(target.org_id, run_id, target.credential),
        reply,
        AuditBatch(org_id=str(target.org_id), records=_run_records(run_id)),
        AuditRecorded(count=3, notices=False),
        RunOutcome(status="drafted", detail={"output_tokens": 11, "finish_reason": "stop"}),
    ]


def _module_code(cls: type) -> tuple[str, CodeType]:
    """The compiled source of the module defining `cls`, and its name."""
    module = sys.modules[cls.__module__]
    path = Path(inspect.getfile(module))
    return module.__name__, compile(path.read_text(), str(path), "exec")


def _execute(named: tuple[str, CodeType]) -> None:
    """Run a workflow module's code in a fresh namespace, as the sandbox imports it for each run
    (Blocks, pydantic and temporalio passed through, already loaded); its classes are rebuilt."""
    name, code = named
    exec(code, {"__name__": name, "__builtins__": builtins})  # noqa: S102 (our own source)


async def _convert(converter: DataConverter, values: list[Any]) -> None:
    payloads = await converter.encode(values)
    await converter.decode(payloads, [type(v) for v in values])


async def measure_parts(
    engine: AsyncEngine,
    target: Target,
    converter: DataConverter,
    workflow_id: str,
    samples: int,
) -> dict[str, dict[str, float]]:
    """Median and p95 in ms of each piece over `samples` interleaved rounds.

    `converter` is Blocks' (the encrypting codec with organization keys); `workflow_id` names a
    run of `target`'s organization, so the codec seals under that organization's key.
    """
    sessions = session_factory(engine)
    ctx = target.ctx
    appender = CombiningAppender(sessions)
    blocks_acts = LlmActivities(sessions, target.policy)
    bare_act = BareLlmActivity(target.base_url, target.api_key)
    sealed = converter.with_context(
        WorkflowSerializationContext(namespace="default", workflow_id=workflow_id)
    )
    run_id = str(uuid.uuid4())
    payloads = _run_payloads(target, run_id)
    model_call = ModelCall(
        api="chat",
        model=MODEL,
        messages=(
            ChatMessage(role="system", content=SYSTEM),
            ChatMessage(role="user", content=PROMPT),
        ),
    )

    async def credential() -> None:
        async with sessions() as session, session.begin():
            found = await credential_by_name(ctx, session, target.credential)
            assert found is not None
            await open_api_key(ctx, session, found)

    async def ssrf_check() -> None:
        await check_outbound_url(target.base_url, target.policy)

    async def guarded_call() -> None:
        async with guarded_client(target.policy, timeout=TIMEOUT_SECONDS) as http:
            await call_model(
                model_call,
                base_url=target.base_url,
                api_key=target.api_key,
                http_client=http,
                timeout_seconds=TIMEOUT_SECONDS,
            )

    async def client_open() -> None:
        async with guarded_client(target.policy, timeout=TIMEOUT_SECONDS):
            pass

    async def shared_call() -> None:
        await bare_act.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
            timeout=TIMEOUT_SECONDS,
        )

    async def usage() -> None:
        async with sessions() as session, session.begin():
            await record_usage(
                ctx,
                session,
                UsageCall(
                    run_id=run_id,
                    step="draft",
                    call_id=str(uuid.uuid4()),
                    credential_id=target.credential_id,
                    credential_name=target.credential,
                    model=MODEL,
                    served_model=f"{MODEL}-local",
                    outcome=OUTCOME_OK,
                    input_tokens=14,
                    output_tokens=11,
                    latency_ms=3,
                    prompt_sha256="0" * 64,
                    completion_sha256="0" * 64,
                ),
            )

    async def audit() -> None:
        await appender.append(ctx, _run_records(run_id))

    def in_activity() -> ActivityEnvironment:
        # A fresh activity id each time: the usage row is a new one, as for a real call.
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            env.info, activity_id=uuid.uuid4().hex, workflow_run_id=str(uuid.uuid4())
        )
        return env

    async def blocks_activity() -> None:
        await in_activity().run(
            blocks_acts.call_model, step_call(target.org_id, run_id, target.credential)
        )

    async def bare_activity() -> None:
        await in_activity().run(bare_act.call, bare_params())

    blocks_module, bare_module = _module_code(LlmDraft), _module_code(BareLlmCall)

    async def import_blocks_module() -> None:
        _execute(blocks_module)

    async def import_bare_module() -> None:
        _execute(bare_module)

    async def codec_sealed() -> None:
        await _convert(sealed, payloads)

    async def codec_plain() -> None:
        await _convert(PLAIN_DATA_CONVERTER, payloads)

    parts: dict[str, Callable[[], Awaitable[None]]] = {
        "activity_blocks": blocks_activity,
        "activity_bare": bare_activity,
        "credential_load_decrypt": credential,
        "ssrf_recheck": ssrf_check,
        "model_call_guarded_new_client": guarded_call,
        "guarded_client_open_close": client_open,
        "model_call_shared_client": shared_call,
        "usage_insert": usage,
        "audit_append_3_events": audit,
        "workflow_module_blocks": import_blocks_module,
        "workflow_module_bare": import_bare_module,
        "payloads_of_a_run_sealed": codec_sealed,
        "payloads_of_a_run_plain": codec_plain,
    }
    timings: dict[str, list[float]] = {name: [] for name in parts}
    cpu: dict[str, float] = dict.fromkeys(parts, 0.0)
    for part in parts.values():  # once each first, not timed: connections, imports
        await part()
    for _ in range(samples):
        for name, part in parts.items():
            began, cpu0 = perf_counter(), process_time()
            await part()
            timings[name].append((perf_counter() - began) * 1000)
            cpu[name] += process_time() - cpu0
    await bare_act.client.close()
    result: dict[str, dict[str, float]] = {}
    for name, values in timings.items():
        ordered = sorted(values)
        result[name] = {
            "p50_ms": round(percentile(ordered, 50), 3),
            "p95_ms": round(percentile(ordered, 95), 3),
            # This process's CPU per sample (mean): on a shared machine steadier than wall time.
            "cpu_ms": round(cpu[name] * 1000 / samples, 3),
        }
    return result


async def measure_replays(
    histories: dict[str, tuple[Replayer, WorkflowHistory]], copies: int
) -> dict[str, dict[str, float]]:
    """The workflow side alone: one run's history replayed `copies` times by one replayer
    (sandbox, payload decoding, the workflow's code; no server, no activity, no audit write).
    Mean wall and CPU ms per replayed run."""
    result: dict[str, dict[str, float]] = {}
    for name, (replayer, history) in histories.items():
        await replayer.replay_workflow(history)  # once first, not timed: imports
        began, cpu0 = perf_counter(), process_time()

        async def copies_of(history: WorkflowHistory = history) -> AsyncIterator[WorkflowHistory]:
            for _ in range(copies):
                yield history

        await replayer.replay_workflows(copies_of())
        result[name] = {
            "mean_ms": round((perf_counter() - began) * 1000 / copies, 3),
            "cpu_ms": round((process_time() - cpu0) * 1000 / copies, 3),
        }
    return result

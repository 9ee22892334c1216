"""`WorkflowKit`: an author's workflows on Temporal's time-skipping test server, driven as the API
drives them, for one test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from blocks.activities.approvers import ApproverActivities
from blocks.activities.audit import AuditActivities
from blocks.activities.llm import LlmStepCall
from blocks.activities.notifications import NoticeSender, NotificationActivities
from blocks.core.approvals import search_attributes as sa
from blocks.core.approvals.eligibility import (
    Decision,
    DecisionRequest,
    DecisionResult,
    RefusalReason,
)
from blocks.core.approvals.notifications import StepNotice
from blocks.core.approvals.policy import policy_memberships
from blocks.core.audit.records import AuditRecord
from blocks.core.roles import Permission
from blocks.infra.crypto.key_specs import new_payload_key_spec
from blocks.infra.db import session_factory
from blocks.infra.temporal.client import encrypting_data_converter, find_execution
from blocks.infra.temporal.search_attributes import ensure_registered
from blocks.models.identity.orgs import create_org_with_owner
from blocks.models.llm.usage import LlmUsage
from blocks.testing.llm import KitLlm, LlmScript
from blocks.testing.members import KitMember, KitMembers
from blocks.testing.records import MemoryAuditLog, NoticeRecorder, stored_events
from blocks.testing.refusals import DecisionRefused, StartRefused
from blocks.testing.server import time_skipping_server_path
from blocks.workers.main import INTERCEPTORS, SANDBOX
from blocks.workflows.catalogue import describe, schema_errors, workflow_name
from blocks.workflows.sdk import DECIDE_UPDATE, STATUS_QUERY, BlocksWorkflow
from blocks.workflows.types import RunInput, RunOutcome, RunView

# How long `decide` waits (real time) for the run to open the step it decides, e.g. right after
# `start`, before the workflow's first task ran. The server's clock does not move meanwhile.
_STEP_OPEN_WAIT_SECONDS = 10.0

Database = AsyncEngine | async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class KitRun:
    """A run the kit started: its ids as the API would give them, and its Temporal handle."""

    run_id: str
    workflow_id: str
    workflow_name: str
    requested_by: str | None
    handle: WorkflowHandle[Any, Any]


class WorkflowKit:
    """A time-skipping Temporal server and a worker serving `workflows`, for one test.

    `activities`: the author's own activities. `database`: an engine or session factory of a
    migrated Blocks database; audit events then go through the real append path to PostgreSQL
    (the kit creates an organization there unless given `org_id`); members stay in memory.
    `env`: a started time-skipping environment to share, with the Blocks search attributes
    registered; the kit then neither starts nor stops a server.

    `llm_replies`: what LLM steps (`await self.llm(...)`) answer, scripted: the reply text per
    step name, or a function of the `LlmStepCall` returning the text or an `LlmReply`. Without
    it, with `database=`, steps call a real server: `await kit.add_llm_credential(...)`.
    blocks.testing.llm says more.
    """

    def __init__(
        self,
        workflows: Sequence[type[BlocksWorkflow]],
        *,
        activities: Sequence[Callable[..., Any]] = (),
        notice_senders: Sequence[NoticeSender] = (),
        database: Database | None = None,
        org_id: str | None = None,
        env: WorkflowEnvironment | None = None,
        llm_replies: LlmScript | None = None,
    ) -> None:
        if not workflows:
            raise ValueError("give the kit at least one workflow to serve")
        self._workflows = {cls: workflow_name(cls) for cls in workflows}
        self._activities = list(activities)
        self._recorder = NoticeRecorder()
        self._senders: list[NoticeSender] = [self._recorder, *notice_senders]
        self._memory = MemoryAuditLog()
        self._sessions = (
            session_factory(database) if isinstance(database, AsyncEngine) else database
        )
        self._given_org = org_id
        self._members = KitMembers(org_id or str(uuid.uuid4()))
        self._given_env = env
        self._llm = KitLlm(self._sessions, llm_replies)
        self._env: WorkflowEnvironment | None = None
        self._task_queue = f"blocks-kit-{uuid.uuid4().hex[:12]}"
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> WorkflowKit:
        try:
            if self._given_env is None:
                self._env = await WorkflowEnvironment.start_time_skipping(
                    test_server_existing_path=time_skipping_server_path(),
                    data_converter=encrypting_data_converter(new_payload_key_spec("kit")),
                )
                self._stack.push_async_callback(self._env.shutdown)
                await ensure_registered(self._env.client)
            else:
                self._env = self._given_env
            if self._sessions is not None and self._given_org is None:
                self._members = KitMembers(await _create_org(self._sessions))
            await self._stack.enter_async_context(self._worker(self._env.client))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def _worker(self, client: Client) -> Worker:
        audit = AuditActivities(self._sessions) if self._sessions is not None else self._memory
        return Worker(
            client,
            task_queue=self._task_queue,
            workflows=list(self._workflows),
            activities=[
                audit.record,
                NotificationActivities(self._senders).notify_step,
                # The step's approver check asks the kit's members, in both modes.
                ApproverActivities(self._members).check_members,
                # Scripted replies, or the real call on the kit's credentials and policy.
                self._llm.call_model,
                *self._activities,
            ],
            workflow_runner=SANDBOX,
            interceptors=INTERCEPTORS,
        )

    @property
    def env(self) -> WorkflowEnvironment:
        if self._env is None:
            raise RuntimeError("use the kit inside `async with WorkflowKit(...) as kit:`")
        return self._env

    @property
    def client(self) -> Client:
        return self.env.client

    @property
    def org_id(self) -> str:
        return self._members.org_id

    @property
    def task_queue(self) -> str:
        return self._task_queue

    # --- members ----------------------------------------------------------------------------

    def member(
        self, name: str, *, roles: Sequence[str] = (), groups: Sequence[str] = ()
    ) -> KitMember:
        """A member with these roles and member groups (the same name gives the same member)."""
        return self._members.add(name, roles, groups)

    def deactivate(self, member: KitMember) -> KitMember:
        """As an admin deactivating them: they no longer count when a step opens, nor decide."""
        return self._members.deactivate(member)

    # --- LLM steps --------------------------------------------------------------------------

    async def add_llm_credential(
        self,
        *,
        name: str = "default",
        base_url: str,
        api_key: str,
        models: Sequence[str],
        api: str = "chat",
        provider: str = "openai-compatible",
    ) -> uuid.UUID:
        """Add an LLM credential to the kit's organization (needs `database=`), as
        `POST /v1/llm/credentials` does: the key sealed under the organization's key, the base
        URL checked by the SSRF guard (OutboundURLRefused). A server on this machine
        (`http://127.0.0.1:PORT/v1`) is allowed for this kit only, as an operator allows one
        with BLOCKS_OUTBOUND_ALLOW_PRIVATE. Returns the credential's id."""
        return await self._llm.add_credential(
            self.org_id,
            name=name,
            base_url=base_url,
            api_key=api_key,
            models=list(models),
            api=api,
            provider=provider,
        )

    # --- runs -------------------------------------------------------------------------------

    async def start(
        self,
        workflow: type[BlocksWorkflow],
        params: dict[str, Any] | None = None,
        *,
        as_: KitMember | None = None,
    ) -> KitRun:
        """Start a run as `POST /v1/runs` does: the input checked against the schema the worker
        publishes from the workflow's INPUT, the approvers it names checked, and the requester
        and organization put in its RunInput. Raises StartRefused."""
        name = self._workflows.get(workflow)
        if name is None:
            raise ValueError(f"{workflow.__qualname__} is not among the kit's workflows")
        requester = self._members.current(as_) if as_ is not None else None
        if requester is not None and not requester.can(Permission.RUN_START):
            raise StartRefused("missing_permission", f"{requester.name} may not start runs")
        # What the API receives is JSON: Decimal, dates and models become what a client sends.
        body = to_jsonable_python(params or {})
        schema = describe(workflow, task_queue=self._task_queue).input_schema
        errors = schema_errors(schema, body)
        if errors:
            raise StartRefused("validation_error", _summary(errors), errors)
        errors = self._members.approver_errors(schema, body, requester.id if requester else None)
        if errors:
            raise StartRefused("invalid_approver", _summary(errors), errors)
        run_id = str(uuid.uuid4())
        run_input = RunInput(
            org_id=self.org_id,
            run_id=run_id,
            workflow_name=name,
            requested_by=requester.id if requester else None,
            params=body,
        )
        handle = await self.client.start_workflow(
            name,
            run_input,
            id=f"run-{run_id}",
            task_queue=self._task_queue,
            result_type=RunOutcome,
            search_attributes=sa.at_start(self.org_id, name, run_input.requested_by),
        )
        return KitRun(run_id, handle.id, name, run_input.requested_by, handle)

    async def decide(
        self,
        run: KitRun,
        step_id: str,
        *,
        as_: KitMember,
        decision: Decision | str = Decision.APPROVE,
        comment: str | None = None,
        form: dict[str, Any] | None = None,
    ) -> DecisionResult:
        """Decide a step as `as_` through the `blocks.decide` Update, as the API sends it; raises
        DecisionRefused with the reason the API answers with."""
        chosen = Decision(decision)
        actor = self._members.current(as_)
        if not actor.active:
            raise DecisionRefused("deactivated", f"{actor.name} is deactivated")
        if not actor.can(Permission.STEP_DECIDE):
            raise DecisionRefused("missing_permission", f"{actor.name} may not decide steps")
        await self._wait_for_step(run, step_id)
        request = DecisionRequest(
            step_id=step_id,
            actor_user_id=actor.id,
            actor_roles=policy_memberships(actor.roles, actor.groups),
            decision=chosen,
            comment=comment,
            channel="api",
            form=form,
        )
        try:
            result: DecisionResult = await run.handle.execute_update(
                DECIDE_UPDATE,
                request,
                id=f"decide:{step_id}:{actor.id}",
                result_type=DecisionResult,
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if (
                isinstance(cause, ApplicationError)
                and cause.type in RefusalReason._value2member_map_
            ):
                details = list(cause.details[0]) if cause.details else []
                raise DecisionRefused(
                    cause.type, f"{actor.name}: {cause.message}", details
                ) from err
            raise
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # the run has closed: so has every step
                raise DecisionRefused("step_closed", f"{actor.name}: the run has closed") from err
            raise
        if result.decision is not chosen:
            # A person's first answer on a step stands (one Update id per person and step).
            raise DecisionRefused(
                "already_voted", f"{actor.name} already decided {result.decision.value}"
            )
        return result

    async def _wait_for_step(self, run: KitRun, step_id: str) -> None:
        """Until the run shows the step (or has closed): right after a start the workflow may not
        have opened it yet, and a decision then would race the step's opening."""
        deadline = asyncio.get_running_loop().time() + _STEP_OPEN_WAIT_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            try:
                view: RunView | None = await self.status(run)
            except RPCError:
                view = None  # not answerable before the run's first workflow task
            if view is not None and any(s.step_id == step_id for s in view.steps):
                return
            state = await find_execution(self.client, run.workflow_id)
            if state is None or state.status is not WorkflowExecutionStatus.RUNNING:
                return
            await asyncio.sleep(0.02)

    async def status(self, run: KitRun) -> RunView:
        """The run's own view (status, steps and their approvers), as `GET /v1/runs/{id}` reads it."""
        view: RunView = await run.handle.query(STATUS_QUERY, result_type=RunView)
        return view

    async def result(self, run: KitRun) -> RunOutcome:
        """The run's outcome; the server's clock skips ahead while the kit waits for it."""
        outcome: RunOutcome = await run.handle.result()
        return outcome

    async def sleep(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> None:
        """Move the server's clock ahead; timers due meanwhile fire (reminders, SLAs)."""
        await self.env.sleep(timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds))

    # --- what the run wrote -----------------------------------------------------------------

    def audit_events(self, run: KitRun) -> list[AuditRecord]:
        """The run's audit events in the order written, from the in-memory log."""
        if self._sessions is not None:
            raise RuntimeError("this kit writes to PostgreSQL: `await kit.read_audit_events(run)`")
        return self._memory.events(run.run_id)

    async def read_audit_events(self, run: KitRun) -> list[AuditRecord]:
        """The run's audit events, from PostgreSQL with `database=` (else from memory)."""
        if self._sessions is None:
            return self._memory.events(run.run_id)
        return await stored_events(self._sessions, self.org_id, run.run_id)

    def notices(self, run: KitRun) -> list[StepNotice]:
        """The notices the run sent its approvers (opened, reminder, escalated), in order."""
        return self._recorder.notices(run.run_id)

    def llm_calls(self, run: KitRun) -> list[LlmStepCall]:
        """What the run's LLM steps asked (step, credential, model, messages), in call order,
        each once however often it was retried."""
        return self._llm.calls(run.run_id)

    async def read_llm_usage(self, run: KitRun) -> list[LlmUsage]:
        """The run's `llm_usage` rows, as the usage report reads them (real calls only: a
        scripted reply records none)."""
        return await self._llm.usage(self.org_id, run.run_id)


async def _create_org(sessions: async_sessionmaker[AsyncSession]) -> str:
    slug = f"kit-{uuid.uuid4().hex[:12]}"
    async with sessions() as session, session.begin():
        org, _, _ = await create_org_with_owner(
            session, slug=slug, name=slug, owner_email=f"owner@{slug}.test", owner_name="Kit"
        )
    return str(org.id)


def _summary(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['field']}: {e['reason']}" for e in errors)

"""Event stream activities: what leaves Blocks for an organization's destinations, step by step.

`advance_stream` moves one destination's stream forward by one batch. A webhook's pass turns
the audit events after its cursor into pending deliveries (the event types it asked for) and
advances the cursor in the same transaction, then starts a delivery workflow per delivery. A
SIEM's pass sends the events after its cursor, exactly as the chain hashed them, with the
checkpoints that cover them, and moves the cursor only when the receiver acknowledged the batch
(2xx): a receiver that is down holds the stream where it is, the activity fails and Temporal
retries it with backoff, and the stream resumes at the first event not acknowledged. A witness
is sent each new checkpoint the same way.

`attempt_delivery` is one attempt of one webhook message; the delivery workflow spaces them
along the Standard Webhooks schedule. A 410 disables the destination; a destination whose
receiver has failed for days (`disable_after`) is disabled and the organization's owners and
admins are told (an audit event, and an email where the deployment sends email).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from blocks.core.audit.export_format import stored_event_lines
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.integrations.events import (
    checkpoint_body,
    event_type_of,
    siem_body,
    wanted,
    webhook_body,
)
from blocks.core.integrations.streams import (
    WEBHOOK_DELIVERY_WORKFLOW,
    AttemptRequest,
    AttemptResult,
    DeliveryRequest,
    StreamRequest,
    StreamStep,
)
from blocks.infra.integrations.email import Mailer
from blocks.infra.integrations.outbound_addresses import OutboundPolicy
from blocks.infra.integrations.webhooks import (
    RETRY_SCHEDULE,
    DeliveryOutcome,
    OutcomeKind,
    deliver,
)
from blocks.models.audit.events import AuditEvent, append_events, hashed_payload
from blocks.models.audit.reads import checkpoints_signed_after, stored_events_after
from blocks.models.base import utcnow
from blocks.models.identity.orgs import members_matching
from blocks.models.integrations.webhook_deliveries import (
    DeliveryStatus,
    NewMessage,
    add_deliveries,
    get_delivery,
    mark_started,
    record_attempt,
    unstarted_deliveries,
)
from blocks.models.integrations.webhooks import (
    DisabledReason,
    Kind,
    WebhookDestination,
    disable_destination,
    get_destination,
    live_secrets,
)

_log = logging.getLogger("blocks.webhooks")
EVENTS_PER_PASS = 500  # audit events read per pass (a webhook's fan-out, a SIEM's batch)
CHECKPOINTS_PER_PASS = 100
STARTS_PER_PASS = 200  # delivery workflows started per pass


def _system(org_id: str) -> OrgContext:
    return OrgContext(
        org_id=OrgId(uuid.UUID(org_id)), user_id=None, roles=(), auth=AuthMethod.SYSTEM
    )


class EventStreamActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        policy: OutboundPolicy,
        public_keys: dict[str, str],
        task_queue: str,
        disable_after: timedelta,
        mailer: Mailer | None = None,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._public_keys = public_keys
        self._task_queue = task_queue
        self._disable_after = disable_after
        self._mailer = mailer

    # ------------------------------------------------------------------ streams

    @activity.defn(name="blocks.events.advance_stream")
    async def advance_stream(self, request: StreamRequest) -> StreamStep:
        ctx = _system(request.org_id)
        destination_id = uuid.UUID(request.destination_id)
        async with self._sessions() as session:
            destination = await get_destination(ctx, session, destination_id)
            kind = destination.kind if destination is not None and destination.enabled else None
        if kind == Kind.WEBHOOK:
            return await self._fan_out(ctx, destination_id)
        if kind in (Kind.SIEM, Kind.WITNESS):
            return await self._push(ctx, destination_id)
        return StreamStep(more=False)  # disabled or deleted meanwhile: nothing to send

    async def _fan_out(self, ctx: OrgContext, destination_id: uuid.UUID) -> StreamStep:
        """A pending delivery per wanted event after the cursor, the cursor moved in the same
        transaction; then the delivery workflows of every delivery not yet started."""
        async with self._sessions() as session, session.begin():
            destination = await get_destination(ctx, session, destination_id, for_update=True)
            if destination is None or not destination.enabled:
                return StreamStep(more=False)
            statement = (
                select(AuditEvent.id, AuditEvent.seq, AuditEvent.action, AuditEvent.data)
                .where(AuditEvent.org_id == ctx.org_id, AuditEvent.seq > destination.sent_seq)
                .order_by(col(AuditEvent.seq))
                .limit(EVENTS_PER_PASS)
            )
            rows = list((await session.exec(statement)).all())
            messages = [
                NewMessage(event_id=id_, event_seq=seq, event_type=event_type)
                for id_, seq, action, data in rows
                if wanted(destination.event_types, event_type := event_type_of(action, data))
            ]
            await add_deliveries(ctx, session, destination_id, messages)
            if rows:
                destination.sent_seq = rows[-1][1]
                session.add(destination)
        started_all = await self._start_deliveries(ctx, destination_id)
        return StreamStep(more=len(rows) == EVENTS_PER_PASS or not started_all)

    async def _start_deliveries(self, ctx: OrgContext, destination_id: uuid.UUID) -> bool:
        """Start the delivery workflow of each unstarted delivery (idempotent by workflow id);
        True when none is left unstarted."""
        client = activity.client()
        async with self._sessions() as session:
            pending = await unstarted_deliveries(ctx, session, destination_id, STARTS_PER_PASS)
        started: list[uuid.UUID] = []
        for delivery in pending:
            # A delivery already started (running or finished) counts: never a second run.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await client.start_workflow(
                    WEBHOOK_DELIVERY_WORKFLOW,
                    DeliveryRequest(str(ctx.org_id), str(delivery.id)),
                    id=delivery.workflow_id(),
                    task_queue=self._task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            started.append(delivery.id)
            activity.heartbeat(len(started))
        async with self._sessions() as session, session.begin():
            await mark_started(ctx, session, started)
        return len(pending) < STARTS_PER_PASS

    async def _push(self, ctx: OrgContext, destination_id: uuid.UUID) -> StreamStep:
        """Send the next batch (SIEM) or checkpoint (witness); move the cursor once the receiver
        acknowledged it. A failure raises, so Temporal retries the pass with backoff."""
        async with self._sessions() as session, session.begin():
            destination = await get_destination(ctx, session, destination_id)
            if destination is None or not destination.enabled:
                return StreamStep(more=False)
            sent_seq, sent_at = destination.sent_seq, destination.sent_checkpoint_at
            url, kind = destination.url, destination.kind
            rows = (
                await stored_events_after(ctx, session, sent_seq, EVENTS_PER_PASS)
                if kind == Kind.SIEM
                else []
            )
            last_seq = rows[-1][2] if rows else None
            checkpoints = await checkpoints_signed_after(
                ctx,
                session,
                sent_at,
                # A SIEM is sent a checkpoint once it holds the events the checkpoint covers.
                up_to_seq=(last_seq or sent_seq) if kind == Kind.SIEM else None,
                limit=CHECKPOINTS_PER_PASS if kind == Kind.SIEM else 1,
            )
            if not rows and not checkpoints:
                return StreamStep(more=False)
            secrets = await live_secrets(ctx, session, destination_id, utcnow())
        if kind == Kind.SIEM:
            first_seq = rows[0][2] if rows else None
            gap = (sent_seq + 1, first_seq - 1) if first_seq and first_seq > sent_seq + 1 else None
            body = siem_body(
                org_id=str(ctx.org_id),
                event_lines=stored_event_lines(rows) if rows else b"",
                first_seq=first_seq,
                last_seq=last_seq,
                checkpoints=[c for _, c in checkpoints],
                public_keys=self._public_keys,
                gap=gap,
                sent_at=utcnow().isoformat(),
            )
            # The same id for the same batch after a failure: the SIEM may drop a repeat.
            tail = f"{first_seq}-{last_seq}" if rows else f"cp-{checkpoints[-1][1].seq}"
            msg_id = f"siem_{destination_id.hex}_{tail}"
        else:
            body = checkpoint_body(checkpoints[0][1], self._public_keys)
            msg_id = f"cp_{destination_id.hex}_{checkpoints[0][1].seq}_{checkpoints[0][1].signature[:16]}"
            msg_id = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in msg_id)
        outcome = await deliver(url, msg_id=msg_id, body=body, secrets=secrets, policy=self._policy)
        async with self._sessions() as session, session.begin():
            destination = await get_destination(ctx, session, destination_id, for_update=True)
            if destination is None:
                return StreamStep(more=False)
            if outcome.kind is OutcomeKind.DELIVERED:
                # Only from where this pass started: an admin's replay meanwhile wins.
                if destination.sent_seq == sent_seq and destination.sent_checkpoint_at == sent_at:
                    if last_seq is not None:
                        destination.sent_seq = last_seq
                    if checkpoints:
                        destination.sent_checkpoint_at = checkpoints[-1][0]
                self._succeeded(destination)
                session.add(destination)
                if kind == Kind.WITNESS:
                    return StreamStep(more=True)  # one checkpoint a pass: look for the next
                full = len(rows) == EVENTS_PER_PASS or len(checkpoints) == CHECKPOINTS_PER_PASS
                return StreamStep(more=full)
            disabled = await self._failed(ctx, session, destination, outcome)
        if disabled:
            await self._tell_admins(ctx, destination, outcome)
            return StreamStep(more=False)
        raise ApplicationError(f"the receiver did not take the batch: {outcome.reason}")

    # ------------------------------------------------------------------ webhook deliveries

    @activity.defn(name="blocks.events.attempt_delivery")
    async def attempt_delivery(self, request: AttemptRequest) -> AttemptResult:
        ctx = _system(request.org_id)
        delivery_id = uuid.UUID(request.delivery_id)
        async with self._sessions() as session, session.begin():
            delivery = await get_delivery(ctx, session, delivery_id, for_update=True)
            if delivery is None or delivery.status != DeliveryStatus.PENDING:
                return AttemptResult(delivery.status if delivery else "missing", None)
            destination = await get_destination(ctx, session, delivery.destination_id)
            if destination is None or not destination.enabled:
                delivery.status = DeliveryStatus.SKIPPED.value
                session.add(delivery)
                return AttemptResult(delivery.status, None)
            event = (
                await session.exec(
                    select(AuditEvent).where(
                        AuditEvent.org_id == ctx.org_id, AuditEvent.seq == delivery.event_seq
                    )
                )
            ).one()
            shown = {**hashed_payload(event.model_dump()), "hash": event.hash}
            body = webhook_body(shown, delivery.event_type)
            secrets = await live_secrets(ctx, session, destination.id, utcnow())
            url, msg_id = destination.url, delivery.message_id
        outcome = await deliver(url, msg_id=msg_id, body=body, secrets=secrets, policy=self._policy)
        final = request.index + 1 >= len(RETRY_SCHEDULE)
        async with self._sessions() as session, session.begin():
            delivery = await get_delivery(ctx, session, delivery_id, for_update=True)
            destination = (
                await get_destination(ctx, session, delivery.destination_id, for_update=True)
                if delivery is not None
                else None
            )
            if delivery is None or destination is None:
                return AttemptResult("missing", None)
            now = utcnow()
            next_delay: float | None = None
            disabled = False
            if outcome.kind is OutcomeKind.DELIVERED:
                status = DeliveryStatus.DELIVERED
                self._succeeded(destination)
                session.add(destination)
            else:
                disabled = await self._failed(ctx, session, destination, outcome)
                if outcome.kind is OutcomeKind.GONE:
                    status = DeliveryStatus.GONE
                elif final or disabled:
                    status = DeliveryStatus.FAILED
                else:
                    status = DeliveryStatus.PENDING
                    scheduled = RETRY_SCHEDULE[request.index + 1].total_seconds()
                    next_delay = max(scheduled, float(outcome.retry_after or 0))
            record_attempt(
                delivery,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                reason=outcome.reason,
                at=now,
                status=status,
                next_attempt_at=now + timedelta(seconds=next_delay) if next_delay else None,
            )
            session.add(delivery)
        if disabled:
            await self._tell_admins(ctx, destination, outcome)
        return AttemptResult(status.value, next_delay)

    # ------------------------------------------------------------------ how receivers do

    @staticmethod
    def _succeeded(destination: WebhookDestination) -> None:
        destination.last_success_at = utcnow()
        destination.failing_since = None
        destination.last_error = None

    async def _failed(
        self,
        ctx: OrgContext,
        session: AsyncSession,
        destination: WebhookDestination,
        outcome: DeliveryOutcome,
    ) -> bool:
        """Note the failure; disable the destination on a 410 or after days of failures.
        Returns whether it was disabled now (the caller tells the admins after committing).

        Measured on Temporal's clock, the one the retry schedule's timers run on (the wall
        clock's in production; on a time-skipping server the wall clock would never reach it)."""
        now = activity.info().current_attempt_scheduled_time
        destination.failing_since = destination.failing_since or now
        destination.last_error = outcome.reason[:300]
        session.add(destination)
        reason: DisabledReason | None = None
        if outcome.kind is OutcomeKind.GONE:
            reason = DisabledReason.GONE
        elif now - destination.failing_since >= self._disable_after:
            reason = DisabledReason.FAILING
        if reason is None or not destination.enabled:
            return False
        await disable_destination(ctx, session, destination, reason)
        await append_events(
            ctx,
            session,
            [
                AuditRecord(
                    action="integration.destination_disabled",
                    actor_type=ActorType.SYSTEM,
                    actor_id="event-stream",
                    target_type="webhook_destination",
                    target_id=str(destination.id),
                    outcome=Outcome.SUCCESS,
                    reason=outcome.reason[:500],
                    data={
                        "kind": destination.kind,
                        "reason": reason.value,
                        "failing_since": _iso(destination.failing_since),
                        "status_code": outcome.status_code,
                    },
                )
            ],
        )
        return True

    async def _tell_admins(
        self, ctx: OrgContext, destination: WebhookDestination, outcome: DeliveryOutcome
    ) -> None:
        """Email the organization's owners and admins that a destination was switched off."""
        if self._mailer is None:
            return
        async with self._sessions() as session:
            people = await members_matching(ctx, session, user_ids=[], roles=["owner", "admin"])
        why = (
            "its receiver answered 410 Gone"
            if destination.disabled_reason == DisabledReason.GONE
            else f"its receiver has failed since {_iso(destination.failing_since)}"
        )
        text = (
            f"Blocks disabled the {destination.kind} destination {destination.url}\n"
            f"({destination.description or 'no description'}) because {why}.\n"
            f"Last answer: {outcome.reason}\n\n"
            "Nothing more is sent to it until an admin enables it again "
            "(PATCH /v1/integrations/webhooks/{id} with enabled: true)."
        )
        for person in people:
            try:
                await self._mailer.send(
                    to=person.email, subject="A Blocks event destination was disabled", text=text
                )
            except OSError as error:  # the audit event already says it; mail is best effort
                _log.warning(
                    "could not email %s about destination %s: %s", person.id, destination.id, error
                )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None

"""Routes for outbound webhook destinations: where an organization's events go, which events,
the signing secret (shown once, at creation and at each rotation) and the delivery log.

Every URL passes the SSRF guard when saved (422 naming `url` and why; https only unless the
operator's BLOCKS_OUTBOUND_ALLOW_PRIVATE admits the host) and again at each delivery. A secret is
sealed as it is made (models.integrations.webhooks) and appears in no other answer, no audit
event and no log line. Audit events name a destination's URL by its origin and the SHA-256 of the
whole URL: receivers often carry a token in the path or query (Slack, Teams), and the audit log
is read by more people than manage integrations.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from blocks.api.deps import CanManageIntegrations, DbSession, TemporalClient, record_change
from blocks.api.errors import Problem, invalid_field, not_found
from blocks.api.integrations.webhook_schemas import (
    DeliveryListOut,
    DeliveryOut,
    DestinationIn,
    DestinationOut,
    DestinationPatch,
    DestinationWithSecretOut,
    ReplayIn,
    RotateIn,
)
from blocks.core.context import OrgContext
from blocks.core.integrations.events import ALL_AUDIT_EVENTS
from blocks.core.integrations.streams import WEBHOOK_DELIVERY_WORKFLOW, DeliveryRequest
from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    OutboundURLRefused,
    check_outbound_url,
)
from blocks.models.audit.reads import chain_head
from blocks.models.base import utcnow
from blocks.models.integrations.webhook_deliveries import (
    DeliveryCursorUnknown,
    DeliveryStatus,
    WebhookDelivery,
    get_delivery,
    list_deliveries,
    mark_started,
    restart_delivery,
)
from blocks.models.integrations.webhooks import (
    Kind,
    WebhookDestination,
    create_destination,
    delete_destination,
    get_destination,
    list_destinations,
    replay_from,
    rotate_secret,
    update_destination,
)

router = APIRouter(prefix="/v1/integrations/webhooks", tags=["integrations"])


def _out(destination: WebhookDestination) -> DestinationOut:
    return DestinationOut(**_fields(destination))


def _fields(destination: WebhookDestination) -> dict[str, Any]:
    expires = destination.previous_expires_at
    return {
        "id": destination.id,
        "kind": destination.kind,
        "url": destination.url,
        "description": destination.description,
        "event_types": list(destination.event_types),
        "enabled": destination.enabled,
        "disabled_reason": destination.disabled_reason,
        "disabled_at": destination.disabled_at,
        "secret_last4": destination.secret_last4,
        "previous_secret_expires_at": expires
        if expires is not None and expires > utcnow()
        else None,
        "created_by": destination.created_by,
        "created_at": destination.created_at,
        "updated_at": destination.updated_at,
        "rotated_at": destination.rotated_at,
        "sent_seq": destination.sent_seq,
        "last_success_at": destination.last_success_at,
        "failing_since": destination.failing_since,
        "last_error": destination.last_error,
    }


def _delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut.model_validate(delivery, from_attributes=True)


def _metadata(destination: WebhookDestination, **extra: Any) -> dict[str, Any]:
    """What an audit event says of a destination: never a secret, nor the URL's path or query."""
    parts = urlsplit(destination.url)
    expires = destination.previous_expires_at
    return {
        "kind": destination.kind,
        "url_origin": f"{parts.scheme}://{parts.netloc}",
        "url_sha256": hashlib.sha256(destination.url.encode()).hexdigest(),
        "description": destination.description,
        "event_types": list(destination.event_types),
        "enabled": destination.enabled,
        "disabled_reason": destination.disabled_reason,
        "secret_last4": destination.secret_last4,
        "previous_secret_expires_at": expires.isoformat() if expires is not None else None,
        **extra,
    }


async def _checked_url(request: Request, url: str) -> str:
    try:
        await check_outbound_url(url, OutboundPolicy.from_settings(request.app.state.settings))
    except OutboundURLRefused as refused:
        raise invalid_field("url", refused.reason) from None
    return url


async def _destination_or_404(
    ctx: OrgContext, session: DbSession, destination_id: uuid.UUID, *, for_update: bool = False
) -> WebhookDestination:
    destination = await get_destination(ctx, session, destination_id, for_update=for_update)
    if destination is None:
        raise not_found("webhook destination")
    return destination


async def _audit(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    action: str,
    destination: WebhookDestination,
    **extra: Any,
) -> None:
    await record_change(
        request,
        ctx,
        session,
        f"webhook.destination.{action}",
        target_type="webhook_destination",
        target_id=str(destination.id),
        data=_metadata(destination, **extra),
    )


@router.post(
    "",
    status_code=201,
    response_model=DestinationWithSecretOut,
    summary="Add a webhook destination",
)
async def add_webhook_destination(
    body: DestinationIn, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> DestinationWithSecretOut:
    """Store where events go and which; the answer carries the signing secret, this once. The URL
    must be https on a public address (or a host:port allowed by the operator's
    BLOCKS_OUTBOUND_ALLOW_PRIVATE), else 422 naming `url` and why."""
    if (misfit := body.kind_problem()) is not None:
        raise invalid_field(*misfit)
    url = await _checked_url(request, body.url)
    destination, secret = await create_destination(
        ctx,
        session,
        url=url,
        description=body.description,
        event_types=body.event_types or [ALL_AUDIT_EVENTS],
        kind=Kind(body.kind),
        from_seq=body.from_seq,
    )
    await _audit(request, ctx, session, "created", destination)
    return DestinationWithSecretOut(**_fields(destination), secret=secret)


@router.get("", response_model=list[DestinationOut], summary="List webhook destinations")
async def list_webhook_destinations(
    ctx: CanManageIntegrations, session: DbSession
) -> list[DestinationOut]:
    """The organization's destinations, oldest first; never a secret."""
    return [_out(d) for d in await list_destinations(ctx, session)]


@router.get(
    "/{destination_id}", response_model=DestinationOut, summary="Read a webhook destination"
)
async def read_webhook_destination(
    destination_id: uuid.UUID, ctx: CanManageIntegrations, session: DbSession
) -> DestinationOut:
    """One destination; never its secret (only the last four characters)."""
    return _out(await _destination_or_404(ctx, session, destination_id))


@router.patch(
    "/{destination_id}", response_model=DestinationOut, summary="Change a webhook destination"
)
async def change_webhook_destination(
    destination_id: uuid.UUID,
    body: DestinationPatch,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> DestinationOut:
    """Change the URL (checked again), description, event types, or switch it off and on:
    switching on clears why it was off (a 410, failures, an admin)."""
    # Checked before the row is locked: resolving the host may take seconds.
    url = await _checked_url(request, body.url) if body.url is not None else None
    destination = await _destination_or_404(ctx, session, destination_id, for_update=True)
    before = _metadata(destination)
    destination = await update_destination(
        ctx,
        session,
        destination,
        url=url,
        description=body.description,
        event_types=body.event_types,
        enabled=body.enabled,
    )
    after = _metadata(destination)
    changed = sorted(k for k in after if after[k] != before[k])
    if changed:
        before_changed = {k: before[k] for k in changed}
        await _audit(
            request, ctx, session, "changed", destination, changed=changed, before=before_changed
        )
    return _out(destination)


@router.post(
    "/{destination_id}/rotate-secret",
    response_model=DestinationWithSecretOut,
    summary="Rotate a webhook destination's signing secret",
)
async def rotate_webhook_secret(
    destination_id: uuid.UUID,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
    body: RotateIn | None = None,
) -> DestinationWithSecretOut:
    """A new signing secret, shown this once. The old one keeps signing (both signatures are
    sent) for `overlap_hours` (24 unless given, 0 to 168), so receivers can switch over; a
    secret from an earlier rotation still in its window is dropped at once."""
    overlap = timedelta(hours=(body or RotateIn()).overlap_hours)
    destination = await _destination_or_404(ctx, session, destination_id, for_update=True)
    previous_last4 = destination.secret_last4
    destination, secret = await rotate_secret(ctx, session, destination, overlap=overlap)
    await _audit(
        request,
        ctx,
        session,
        "secret_rotated",
        destination,
        previous_secret_last4=previous_last4,
        overlap_hours=int(overlap.total_seconds() // 3600),
    )
    return DestinationWithSecretOut(**_fields(destination), secret=secret)


@router.delete(
    "/{destination_id}", response_model=DestinationOut, summary="Delete a webhook destination"
)
async def delete_webhook_destination(
    destination_id: uuid.UUID, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> DestinationOut:
    """Deliveries stop and both secrets are dropped at once; the delivery log is kept."""
    destination = await _destination_or_404(ctx, session, destination_id, for_update=True)
    destination = await delete_destination(ctx, session, destination)
    await _audit(request, ctx, session, "deleted", destination)
    return _out(destination)


@router.get(
    "/{destination_id}/deliveries",
    response_model=DeliveryListOut,
    summary="List a webhook destination's deliveries",
)
async def list_webhook_deliveries(
    destination_id: uuid.UUID,
    ctx: CanManageIntegrations,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=200, description="Deliveries per page")] = 50,
    cursor: Annotated[
        uuid.UUID | None, Query(description="`next_cursor` of the page before")
    ] = None,
) -> DeliveryListOut:
    """The delivery log, newest first: status, attempts, last status code and latency; never
    the body sent."""
    await _destination_or_404(ctx, session, destination_id)
    try:
        page = await list_deliveries(ctx, session, destination_id, limit=limit, after=cursor)
    except DeliveryCursorUnknown:
        raise invalid_field("cursor", "is not a delivery of this destination") from None
    return DeliveryListOut(
        deliveries=[_delivery_out(d) for d in page],
        next_cursor=page[-1].id if len(page) == limit else None,
    )


@router.post(
    "/{destination_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    summary="Redeliver a webhook message",
)
async def redeliver_webhook_message(
    destination_id: uuid.UUID,
    delivery_id: uuid.UUID,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
    client: TemporalClient,
) -> DeliveryOut:
    """Send a message again along the whole retry schedule, under the same `webhook-id` (the
    receiver drops it if it already has it). 409 while it is still being delivered; 422 while
    the destination is off (enable it first)."""
    destination = await _destination_or_404(ctx, session, destination_id)
    delivery = await get_delivery(ctx, session, delivery_id, for_update=True)
    if delivery is None or delivery.destination_id != destination.id:
        raise not_found("delivery")
    if not destination.enabled:
        raise invalid_field("destination_id", "the destination is disabled: enable it first")
    if delivery.status == DeliveryStatus.PENDING:
        raise Problem(
            409, "Conflict", "the message is still being delivered", code="delivery_pending"
        )
    delivery = await restart_delivery(ctx, session, delivery)
    await _audit(
        request,
        ctx,
        session,
        "redelivered",
        destination,
        delivery_id=str(delivery.id),
        message_id=delivery.message_id,
    )
    # Committed first: the workflow's first attempt reads the row as pending. Should the start
    # fail, the row stays unstarted and the destination's next pass starts it.
    await session.commit()
    await client.start_workflow(
        WEBHOOK_DELIVERY_WORKFLOW,
        DeliveryRequest(str(ctx.org_id), str(delivery.id)),
        id=delivery.workflow_id(),
        task_queue=request.app.state.settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    await mark_started(ctx, session, [delivery.id])
    return _delivery_out(delivery)


@router.post(
    "/{destination_id}/replay",
    response_model=DestinationOut,
    summary="Replay a SIEM stream from a sequence number",
)
async def replay_stream(
    destination_id: uuid.UUID,
    body: ReplayIn,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> DestinationOut:
    """Move a `siem` stream back (or forward) so that it sends every audit event from `from_seq`
    on, in chain order, with the checkpoints covering them: a SIEM that lost data after an outage
    asks for it again. 422 for another kind, or a seq beyond the chain's head."""
    destination = await _destination_or_404(ctx, session, destination_id, for_update=True)
    if destination.kind != Kind.SIEM:
        raise invalid_field("destination_id", "only a siem stream replays")
    head_seq, _ = await chain_head(ctx, session)
    if body.from_seq > head_seq + 1:
        raise invalid_field("from_seq", f"is beyond the chain's head (seq {head_seq})")
    previous = destination.sent_seq
    destination = await replay_from(ctx, session, destination, body.from_seq)
    await _audit(
        request, ctx, session, "replayed", destination, from_seq=body.from_seq, was=previous
    )
    return _out(destination)

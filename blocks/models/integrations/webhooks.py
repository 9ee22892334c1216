"""Outbound webhook destinations (URL, event types, signing secrets sealed, rotation with an
overlap window) and where each one's stream stands.

A Standard Webhooks secret is an HMAC key: the signer needs it in clear, so it cannot be kept
hashed. It is sealed here as it is made (AES-256-GCM under the organization's live data key,
associated data binding organization, destination and purpose, as LLM keys and OIDC client
secrets are) and opened only by `live_secrets`, which the delivery activity calls just before
signing. After a rotation the previous secret stays sealed beside the new one until
`previous_expires_at`; meanwhile both are live and each delivery carries both signatures.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from sqlalchemy import Column, Index, LargeBinary, String
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.crypto.org_keys import OrgDataKey
from blocks.infra.db import bind_org
from blocks.infra.integrations.webhooks import new_signing_secret
from blocks.models.audit.reads import chain_head
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow
from blocks.models.keys.org_keys import live_org_key, org_key_by_id

DEFAULT_OVERLAP = timedelta(hours=24)
MAX_OVERLAP = timedelta(hours=168)
_CURRENT = "current"
_PREVIOUS = "previous"


class Kind(StrEnum):
    WEBHOOK = "webhook"  # the event types it asks for, one signed message per event
    SIEM = "siem"  # every audit event in chain order, in batches, with the checkpoints
    WITNESS = "witness"  # every signed checkpoint, nothing else


class DisabledReason(StrEnum):
    GONE = "gone"  # the receiver answered 410 Gone
    FAILING = "failing"  # deliveries failed for days
    ADMIN = "admin"  # switched off by an admin


class WebhookDestination(SQLModel, table=True):
    __tablename__ = "webhook_destinations"
    __table_args__ = (Index("ix_webhook_destinations_org", "org_id", "created_at"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    kind: str = Field(default=Kind.WEBHOOK.value, max_length=16)
    url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=500)
    event_types: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=16)
    disabled_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    secret_key_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    secret_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    secret_last4: str | None = Field(default=None, max_length=4)
    previous_key_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    previous_sealed: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True)
    )
    previous_expires_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    created_by: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    rotated_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    deleted_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    # Where its stream stands (migration 0024): the last audit seq handed over, the signing time
    # of the last checkpoint sent, and how its receiver is doing.
    sent_seq: int = 0
    sent_checkpoint_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    last_success_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    failing_since: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    last_error: str | None = Field(default=None, max_length=300)

    def __repr__(self) -> str:
        # Never the sealed secrets, even in a traceback's locals.
        return f"WebhookDestination(id={self.id}, url={self.url!r}, enabled={self.enabled})"


class DestinationNotFound(LookupError):
    """No live destination of the organization has this id (deleted, unknown or another's)."""


class DestinationSecretUnavailable(LookupError):
    """A sealed secret does not open (its data key destroyed, or the row altered)."""


def _aad(org_id: uuid.UUID, destination_id: uuid.UUID) -> bytes:
    # The same for the current and the previous slot: a rotation moves the sealed bytes as they
    # are. Copied to another destination's row, they do not open.
    return f"blocks.webhook-destination.v1|{org_id}|{destination_id}|signing_secret".encode()


def _seal_current(key: OrgDataKey, destination: WebhookDestination, secret: str) -> None:
    destination.secret_key_id = key.key_id
    destination.secret_sealed = key.seal(secret.encode(), _aad(destination.org_id, destination.id))
    destination.secret_last4 = secret[-4:]


def _drop_previous(destination: WebhookDestination) -> None:
    destination.previous_key_id = None
    destination.previous_sealed = None
    destination.previous_expires_at = None


def _forget_expired_previous(destination: WebhookDestination, now: datetime) -> None:
    expires = destination.previous_expires_at
    if expires is not None and expires <= now:
        _drop_previous(destination)


async def create_destination(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    url: str,
    description: str,
    event_types: list[str],
    kind: Kind = Kind.WEBHOOK,
    from_seq: int | None = None,
) -> tuple[WebhookDestination, str]:
    """A new destination with a fresh signing secret sealed; the secret is returned once here.

    A webhook gets the events that happen from now on; a SIEM stream starts at `from_seq`
    (default 1: the whole chain, so the SIEM can verify it from genesis); a witness gets the
    checkpoints signed from now on."""
    await bind_org(session, ctx.org_id)
    head_seq, _ = await chain_head(ctx, session)
    start = head_seq if kind is not Kind.SIEM else max((from_seq or 1) - 1, 0)
    destination = WebhookDestination(
        org_id=ctx.org_id,
        kind=kind.value,
        url=url,
        description=description,
        event_types=event_types,
        created_by=ctx.user_id,
        sent_seq=start,
        sent_checkpoint_at=utcnow() if kind is Kind.WITNESS else None,
    )
    secret = new_signing_secret()
    _seal_current(await live_org_key(session, ctx.org_id), destination, secret)
    session.add(destination)
    await session.flush()
    return destination, secret


async def list_destinations(ctx: OrgContext, session: AsyncSession) -> list[WebhookDestination]:
    """The organization's live destinations, oldest first."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(WebhookDestination)
        .where(
            WebhookDestination.org_id == ctx.org_id, col(WebhookDestination.deleted_at).is_(None)
        )
        .order_by(col(WebhookDestination.created_at), col(WebhookDestination.id))
    )
    return list((await session.exec(statement)).all())


async def get_destination(
    ctx: OrgContext, session: AsyncSession, destination_id: uuid.UUID, *, for_update: bool = False
) -> WebhookDestination | None:
    """A live destination of the organization by id (None: deleted, unknown or another's);
    `for_update` locks the row, so two rotations cannot each keep a secret the other drops."""
    await bind_org(session, ctx.org_id)
    statement = select(WebhookDestination).where(
        WebhookDestination.org_id == ctx.org_id,
        WebhookDestination.id == destination_id,
        col(WebhookDestination.deleted_at).is_(None),
    )
    if for_update:
        statement = statement.with_for_update()
    return (await session.exec(statement)).first()


async def update_destination(
    ctx: OrgContext,
    session: AsyncSession,
    destination: WebhookDestination,
    *,
    url: str | None = None,
    description: str | None = None,
    event_types: list[str] | None = None,
    enabled: bool | None = None,
) -> WebhookDestination:
    """Change what is given; disabling by hand says 'admin', enabling clears any reason."""
    await bind_org(session, ctx.org_id)
    now = utcnow()
    if url is not None:
        destination.url = url
    if description is not None:
        destination.description = description
    if event_types is not None:
        destination.event_types = event_types
    if enabled is True and not destination.enabled:
        destination.enabled = True
        destination.disabled_reason = destination.disabled_at = None
        destination.failing_since = None
        if destination.kind == Kind.WEBHOOK:
            # A webhook is not sent what happened while it was off (the log keeps it); a stream
            # resumes where it stopped, so the SIEM sees no gap.
            destination.sent_seq, _ = await chain_head(ctx, session)
    elif enabled is False and destination.enabled:
        _disable(destination, DisabledReason.ADMIN, now)
    _forget_expired_previous(destination, now)
    destination.updated_at = now
    session.add(destination)
    await session.flush()
    return destination


def _disable(destination: WebhookDestination, reason: DisabledReason, now: datetime) -> None:
    destination.enabled = False
    destination.disabled_reason = reason.value
    destination.disabled_at = now


async def disable_destination(
    ctx: OrgContext, session: AsyncSession, destination: WebhookDestination, reason: DisabledReason
) -> WebhookDestination:
    """Switch a destination off for `reason` (a 410, days of failures): deliveries stop."""
    await bind_org(session, ctx.org_id)
    now = utcnow()
    _disable(destination, reason, now)
    destination.updated_at = now
    session.add(destination)
    await session.flush()
    return destination


async def rotate_secret(
    ctx: OrgContext,
    session: AsyncSession,
    destination: WebhookDestination,
    *,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> tuple[WebhookDestination, str]:
    """A new signing secret (returned once); the current one stays live for `overlap` (none with
    a zero overlap). A previous secret still in its window is dropped: only two are ever live."""
    if not timedelta(0) <= overlap <= MAX_OVERLAP:
        raise ValueError(f"an overlap of {overlap} is outside 0..{MAX_OVERLAP}")
    await bind_org(session, ctx.org_id)
    now = utcnow()
    _drop_previous(destination)
    if overlap > timedelta(0):
        destination.previous_key_id = destination.secret_key_id
        destination.previous_sealed = destination.secret_sealed
        destination.previous_expires_at = now + overlap
    secret = new_signing_secret()
    _seal_current(await live_org_key(session, ctx.org_id), destination, secret)
    destination.rotated_at = destination.updated_at = now
    session.add(destination)
    await session.flush()
    return destination, secret


async def delete_destination(
    ctx: OrgContext, session: AsyncSession, destination: WebhookDestination
) -> WebhookDestination:
    """Delete: both secrets are dropped for good; the row stays for the deliveries naming it."""
    await bind_org(session, ctx.org_id)
    now = utcnow()
    if destination.enabled:
        _disable(destination, DisabledReason.ADMIN, now)
    destination.deleted_at = destination.updated_at = now
    destination.secret_key_id = destination.secret_sealed = destination.secret_last4 = None
    _drop_previous(destination)
    session.add(destination)
    await session.flush()
    return destination


async def _open(
    session: AsyncSession,
    destination: WebhookDestination,
    key_id: uuid.UUID,
    sealed: bytes,
    slot: str,
) -> str:
    key = await org_key_by_id(session, destination.org_id, key_id)
    aad = _aad(destination.org_id, destination.id)
    try:
        opened = key.open_sealed(sealed, aad)
    except InvalidTag as error:  # altered, or copied from another row
        raise DestinationSecretUnavailable(
            f"the {slot} signing secret of webhook destination {destination.id} does not open "
            "(it was altered or moved); rotate it"
        ) from error
    return opened.decode()


async def live_secrets(
    ctx: OrgContext, session: AsyncSession, destination_id: uuid.UUID, now: datetime
) -> list[str]:
    """The destination's signing secrets in clear for the delivery about to be signed: the
    current one, then the previous one while its overlap window lasts (at `now`).

    DestinationNotFound for a deleted, unknown or another organization's destination;
    DestinationSecretUnavailable if a sealed secret does not open."""
    destination = await get_destination(ctx, session, destination_id)
    if (
        destination is None
        or destination.secret_sealed is None
        or destination.secret_key_id is None
    ):
        raise DestinationNotFound(f"no live webhook destination {destination_id}")
    secrets = [
        await _open(
            session, destination, destination.secret_key_id, destination.secret_sealed, _CURRENT
        )
    ]
    expires = destination.previous_expires_at
    if (
        expires is not None
        and expires > now
        and destination.previous_sealed is not None
        and destination.previous_key_id is not None
    ):
        secrets.append(
            await _open(
                session,
                destination,
                destination.previous_key_id,
                destination.previous_sealed,
                _PREVIOUS,
            )
        )
    return secrets


async def replay_from(
    ctx: OrgContext, session: AsyncSession, destination: WebhookDestination, from_seq: int
) -> WebhookDestination:
    """Point a SIEM stream at `from_seq`: every event from there on is sent again, with the
    checkpoints covering them (all checkpoints are looked at again; the SIEM drops repeats)."""
    await bind_org(session, ctx.org_id)
    destination.sent_seq = from_seq - 1
    destination.sent_checkpoint_at = None
    destination.updated_at = utcnow()
    session.add(destination)
    await session.flush()
    return destination

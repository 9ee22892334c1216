"""Per-person keys for the audit log's personal fields: sealed on append, revealed on read, erased.

An audit event whose actor is a user (`actor_type` "user", `actor_id` a `users.id`) stores its
actor_email, ip and user_agent as `enc:v1:<key id>:<base64(nonce + AES-256-GCM ciphertext)>`,
under a random data key held for that (organization, user) in `audit_subject_keys`, wrapped by
the active master key (BLOCKS_MASTER_KEYS). The chain hash covers the stored ciphertext, so
rows verify without any key. Erasure destroys the person's data key: their past fields read
`[erased]`, the rows and the chain stay untouched, and their next event gets a fresh key.

Keys are per (organization, user), not per user: each organization is its own controller of
what its members did there, so an admin erases a person's data in their organization only, and
row-level security keeps one organization's keys out of another's reach.

The sealed form, the associated data and the master keys are in `infra.field_crypto`; this
module holds the keys' table, fetches and erases keys, and reveals fields on read.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Column, Index, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import OrgContext
from blocks.infra.crypto.field_crypto import (
    DataKey,
    MasterKeys,
    current_master_keys,
    new_data_key,
    parse_sealed,
)
from blocks.infra.db import bind_org
from blocks.models.base import org_fk_column, timestamp_column, user_fk_column, utcnow

_log = logging.getLogger("blocks.privacy")

PERSONAL_FIELDS = ("actor_email", "ip", "user_agent")
# The plaintext widths the columns had before they held ciphertext; still the caller's limits.
PLAINTEXT_LIMITS: Mapping[str, int] = {"actor_email": 320, "ip": 64, "user_agent": 500}
# The columns' widths now (migration 0004): room for the ciphertext of the longest plaintext.
STORED_LIMITS: Mapping[str, int] = {"actor_email": 2048, "ip": 512, "user_agent": 3072}
ERASED = "[erased]"
# A value that should decrypt but cannot (key missing, wrong person, tampered): never shown raw.
UNREADABLE = "[unreadable]"


class AuditSubjectKey(SQLModel, table=True):
    """A person's data key in one organization; `wrapped_key` is NULL once erased (a tombstone)."""

    __tablename__ = "audit_subject_keys"
    __table_args__ = (
        Index(
            "ux_audit_subject_keys_live",
            "org_id",
            "user_id",
            unique=True,
            postgresql_where=text("erased_at IS NULL"),
        ),
        Index("ix_audit_subject_keys_org_user", "org_id", "user_id"),
    )

    key_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    master_key_id: str = Field(sa_column=Column(String(64), nullable=False))
    wrapped_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=timestamp_column())
    erased_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


# --- sealing on append ---------------------------------------------------------------------


def check_personal_fields(record: AuditRecord) -> None:
    """Refuse over-long personal fields before they are encrypted past the column's notice."""
    for name, limit in PLAINTEXT_LIMITS.items():
        value = getattr(record, name)
        if value is not None and len(value) > limit:
            raise ValueError(f"audit {name} is longer than {limit} characters")


def subject_of(record: AuditRecord) -> uuid.UUID | None:
    """The person whose key seals this record's personal fields; None if it has none to seal."""
    if record.actor_type is not ActorType.USER:
        return None
    if all(getattr(record, name) is None for name in PERSONAL_FIELDS):
        return None
    try:
        return uuid.UUID(str(record.actor_id))
    except ValueError:
        # Fail closed: a user's personal data we could not later erase must not be written.
        raise ValueError("a user actor with personal fields needs a users.id as actor_id") from None


@dataclass(frozen=True)
class Sealer:
    """The live data keys of one batch's people; replaces their personal fields by ciphertext."""

    org_id: uuid.UUID
    keys: Mapping[uuid.UUID, DataKey]

    def seal(self, record: AuditRecord, row: dict[str, Any]) -> None:
        subject = subject_of(record)
        if subject is None:
            return
        key = self.keys[subject]
        for name in PERSONAL_FIELDS:
            value = row[name]
            if value is None:
                continue
            row[name] = key.seal(self.org_id, row["id"], name, value)


# Only for the rare second pass (see KeyRequest.sealer); the first rides on the head's lock.
_SUBJECT_KEYS = text(
    "SELECT user_id, key_id, master_key_id, wrapped_key "
    "FROM blocks_audit_subject_keys(:org_id, CAST(:candidates AS jsonb))"
)


@dataclass(frozen=True)
class KeyRequest:
    """The people of one batch, each with a fresh candidate key (used only if they have none).

    Generating the candidates up front keeps get-or-create to one statement, which
    `append_events` sends in the same round trip as the chain head's lock.
    """

    org_id: uuid.UUID
    master: MasterKeys
    candidates: Mapping[uuid.UUID, Mapping[str, str]]

    def candidates_json(self, only: Iterable[uuid.UUID] | None = None) -> str:
        wanted = self.candidates if only is None else only
        return json.dumps([self.candidates[user_id] for user_id in wanted])

    async def sealer(self, session: AsyncSession, returned: Sequence[Mapping[str, str]]) -> Sealer:
        """Unwrap the live keys the database returned for this request."""
        keys: dict[uuid.UUID, DataKey] = {}
        for item in returned:
            self._add(
                keys,
                uuid.UUID(item["user_id"]),
                uuid.UUID(item["key_id"]),
                item["master_key_id"],
                bytes.fromhex(item["wrapped_key"]),
            )
        missing = [user_id for user_id in self.candidates if user_id not in keys]
        if missing:
            # A live key was erased between the INSERT and the SELECT: ask once more, which
            # creates the fresh one.
            rows = await session.exec(  # type: ignore[call-overload]
                _SUBJECT_KEYS.bindparams(
                    org_id=self.org_id, candidates=self.candidates_json(missing)
                )
            )
            for row in rows.all():
                self._add(keys, row.user_id, row.key_id, row.master_key_id, bytes(row.wrapped_key))
        if len(keys) != len(self.candidates):
            raise RuntimeError("no live audit data key for every person in the batch")
        return Sealer(self.org_id, keys)

    def _add(
        self,
        keys: dict[uuid.UUID, DataKey],
        user_id: uuid.UUID,
        key_id: uuid.UUID,
        master_key_id: str,
        wrapped: bytes,
    ) -> None:
        keys[user_id] = self.master.unwrap_data_key(
            master_key_id, self.org_id, user_id, key_id, wrapped
        )


def key_request(ctx: OrgContext, records: Iterable[AuditRecord]) -> KeyRequest | None:
    """None when no record carries a user's personal fields: then encryption costs nothing."""
    subjects = sorted({s for s in map(subject_of, records) if s is not None})
    if not subjects:
        return None
    master = current_master_keys()
    candidates: dict[uuid.UUID, dict[str, str]] = {}
    for user_id in subjects:
        key_id = uuid.uuid4()
        wrapped = master.wrap(ctx.org_id, user_id, key_id, new_data_key())
        candidates[user_id] = {
            "user_id": str(user_id),
            "key_id": str(key_id),
            "master_key_id": master.active_id,
            "wrapped_key": base64.b64encode(wrapped).decode(),
        }
    return KeyRequest(ctx.org_id, master, candidates)


# --- revealing on read ---------------------------------------------------------------------


class StoredEvent(Protocol):
    """The parts of a stored audit row that revealing reads (an AuditEvent satisfies it)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def actor_type(self) -> str: ...
    @property
    def actor_id(self) -> str | None: ...
    @property
    def actor_email(self) -> str | None: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def user_agent(self) -> str | None: ...


@dataclass(frozen=True)
class Revealed:
    """An event's personal fields for display, and whether erasure made any of them unreadable."""

    actor_email: str | None
    ip: str | None
    user_agent: str | None
    erased: bool


def _actor_uuid(event: StoredEvent) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(event.actor_id))
    except ValueError:
        return None


def _is_sealed(event: StoredEvent) -> bool:
    # Only rows of user actors were sealed; elsewhere a value that looks like ciphertext is text.
    return event.actor_type == ActorType.USER.value


async def reveal(
    ctx: OrgContext, session: AsyncSession, events: Sequence[StoredEvent]
) -> list[Revealed]:
    """Decrypt the personal fields of the org's events; one query for all their keys."""
    wanted = {
        parsed[0]
        for event in events
        if _is_sealed(event)
        for name in PERSONAL_FIELDS
        if (value := getattr(event, name)) is not None
        and (parsed := parse_sealed(value)) is not None
    }
    keys: dict[uuid.UUID, DataKey | None] = {}
    owners: dict[uuid.UUID, uuid.UUID] = {}
    if wanted:
        await bind_org(session, ctx.org_id)
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT key_id, user_id, master_key_id, wrapped_key FROM audit_subject_keys "
                "WHERE org_id = :org_id AND key_id = ANY(CAST(:ids AS uuid[]))"
            ).bindparams(org_id=ctx.org_id, ids=sorted(wanted))
        )
        master = current_master_keys()
        for row in rows.all():
            owners[row.key_id] = row.user_id
            keys[row.key_id] = (
                None
                if row.wrapped_key is None
                else master.unwrap_data_key(
                    row.master_key_id, ctx.org_id, row.user_id, row.key_id, bytes(row.wrapped_key)
                )
            )

    revealed: list[Revealed] = []
    for event in events:
        shown: dict[str, str | None] = {}
        erased = False
        for name in PERSONAL_FIELDS:
            value = getattr(event, name)
            parsed = parse_sealed(value) if value is not None and _is_sealed(event) else None
            if parsed is None:
                shown[name] = value  # plain: not a person's field, or written before 0004
                continue
            key_id, blob = parsed
            if key_id in keys and keys[key_id] is None:
                shown[name], erased = ERASED, True
                continue
            shown[name] = _open(ctx, event, name, key_id, blob, keys.get(key_id), owners)
        revealed.append(
            Revealed(
                actor_email=shown["actor_email"],
                ip=shown["ip"],
                user_agent=shown["user_agent"],
                erased=erased,
            )
        )
    return revealed


def _open(
    ctx: OrgContext,
    event: StoredEvent,
    name: str,
    key_id: uuid.UUID,
    blob: bytes,
    key: DataKey | None,
    owners: Mapping[uuid.UUID, uuid.UUID],
) -> str:
    if key is None or owners.get(key_id) != _actor_uuid(event):
        _log.error("audit event %s: %s names a key this organization does not hold", event.id, name)
        return UNREADABLE
    opened = key.open(ctx.org_id, event.id, name, blob)
    if opened is None:
        _log.error("audit event %s: %s does not decrypt (altered or moved)", event.id, name)
        return UNREADABLE
    return opened


# --- erasure -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erasure:
    keys_erased: int
    events_unreadable: int  # this person's events whose sealed fields can no longer be read
    events_in_plaintext: int  # written before encryption (0004): plaintext no key can erase
    erased_at: datetime


async def holds_personal_data_of(
    ctx: OrgContext, session: AsyncSession, user_id: uuid.UUID
) -> bool:
    """A member of the org, or a former one whose key it still holds (live or erased)."""
    await bind_org(session, ctx.org_id)
    row = (
        await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT EXISTS (SELECT 1 FROM memberships WHERE org_id = :org_id "
                "AND user_id = :user_id) OR EXISTS (SELECT 1 FROM audit_subject_keys "
                "WHERE org_id = :org_id AND user_id = :user_id)"
            ).bindparams(org_id=ctx.org_id, user_id=user_id)
        )
    ).one()
    return bool(row[0])


# A scan of the org's events (no index on actor_id: appends should not pay for a rare
# operation). `^enc:v1:` tells sealed values from plaintext written before encryption.
_COUNT_EVENTS = text(
    """
    SELECT
        count(*) FILTER (WHERE actor_email LIKE 'enc:v1:%' OR ip LIKE 'enc:v1:%'
                         OR user_agent LIKE 'enc:v1:%') AS sealed,
        count(*) FILTER (WHERE (actor_email IS NOT NULL AND actor_email NOT LIKE 'enc:v1:%')
                         OR (ip IS NOT NULL AND ip NOT LIKE 'enc:v1:%')
                         OR (user_agent IS NOT NULL AND user_agent NOT LIKE 'enc:v1:%')) AS plain
    FROM audit_events
    WHERE org_id = :org_id AND actor_type = 'user' AND actor_id = :actor_id
    """
)
_ERASE = text(
    "UPDATE audit_subject_keys SET wrapped_key = NULL, erased_at = :now "
    "WHERE org_id = :org_id AND user_id = :user_id AND erased_at IS NULL RETURNING key_id"
)


async def erase_subject(ctx: OrgContext, session: AsyncSession, user_id: uuid.UUID) -> Erasure:
    """Destroy the person's live data key in this organization (idempotent)."""
    await bind_org(session, ctx.org_id)
    # Counted before the UPDATE, so the scan runs without holding the key row's lock.
    counts = (
        await session.exec(  # type: ignore[call-overload]
            _COUNT_EVENTS.bindparams(org_id=ctx.org_id, actor_id=str(user_id))
        )
    ).one()
    now = utcnow()
    erased = (
        await session.exec(  # type: ignore[call-overload]
            _ERASE.bindparams(now=now, org_id=ctx.org_id, user_id=user_id)
        )
    ).all()
    return Erasure(
        keys_erased=len(erased),
        events_unreadable=int(counts.sealed),
        events_in_plaintext=int(counts.plain),
        erased_at=now,
    )

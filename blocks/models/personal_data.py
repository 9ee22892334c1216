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
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, Index, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit import ActorType, AuditRecord
from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.infra.payload_codec import PayloadKeyError, load_or_create_key_file, parse_payload_keys
from blocks.infra.settings import Environment, Settings, get_settings
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

_PREFIX = "enc:v1:"
_NONCE_BYTES = 12


class MasterKeyError(ValueError):
    """BLOCKS_MASTER_KEYS is malformed, or a wrapped key names a master key we do not hold."""


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


# --- master keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MasterKeys:
    """Key-encryption keys: the first wraps new data keys, all unwrap (rotation)."""

    active_id: str
    ciphers: Mapping[str, AESGCM] = field(repr=False)

    @classmethod
    def parse(cls, spec: str) -> MasterKeys:
        try:
            active, keys = parse_payload_keys(spec)
        except PayloadKeyError as err:
            raise MasterKeyError(f"BLOCKS_MASTER_KEYS: {err}") from None
        if any(len(key_id) > 64 for key_id in keys):
            raise MasterKeyError("BLOCKS_MASTER_KEYS: key ids are at most 64 characters")
        return cls(active, {key_id: AESGCM(key) for key_id, key in keys.items()})

    def wrap(self, org_id: uuid.UUID, user_id: uuid.UUID, key_id: uuid.UUID, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        aad = _wrap_aad(self.active_id, org_id, user_id, key_id)
        return nonce + self.ciphers[self.active_id].encrypt(nonce, key, aad)

    def unwrap(
        self,
        master_key_id: str,
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        key_id: uuid.UUID,
        wrapped: bytes,
    ) -> bytes:
        cipher = self.ciphers.get(master_key_id)
        if cipher is None:
            raise MasterKeyError(f"a data key is wrapped by unknown master key {master_key_id!r}")
        aad = _wrap_aad(master_key_id, org_id, user_id, key_id)
        return cipher.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], aad)


def _wrap_aad(
    master_key_id: str, org_id: uuid.UUID, user_id: uuid.UUID, key_id: uuid.UUID
) -> bytes:
    # A wrapped key only opens as the key of the person, organization and key id it was made for.
    return f"blocks.subject-key.v1|{master_key_id}|{org_id}|{user_id}|{key_id}".encode()


def master_key_spec(settings: Settings) -> str:
    if settings.master_keys is not None:
        return settings.master_keys.get_secret_value()
    if settings.env is Environment.PROD:
        raise MasterKeyError("BLOCKS_MASTER_KEYS is required when BLOCKS_ENV=prod")
    return load_or_create_key_file(settings.data_dir / "master-keys")


def load_master_keys(settings: Settings) -> MasterKeys:
    return MasterKeys.parse(master_key_spec(settings))


# `append_events(ctx, session, records)` is the one append path for the API, activities and
# tools, and the master key is process configuration (like the payload codec's keys), so it is
# installed once per process: by `create_app`, or on first use from the process's settings.
_installed: MasterKeys | None = None


def install_master_keys(keys: MasterKeys) -> None:
    global _installed
    _installed = keys


def current_master_keys() -> MasterKeys:
    keys = _installed
    if keys is None:
        keys = load_master_keys(get_settings())
        install_master_keys(keys)
    return keys


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
class _DataKey:
    key_id: uuid.UUID
    cipher: AESGCM


def _field_aad(org_id: uuid.UUID, event_id: uuid.UUID, name: str) -> bytes:
    # Bound to its organization, event and field: a ciphertext moved anywhere else fails to open.
    return f"blocks.audit.personal.v1|{org_id}|{event_id}|{name}".encode()


@dataclass(frozen=True)
class Sealer:
    """The live data keys of one batch's people; replaces their personal fields by ciphertext."""

    org_id: uuid.UUID
    keys: Mapping[uuid.UUID, _DataKey]

    def seal(self, record: AuditRecord, row: dict[str, Any]) -> None:
        subject = subject_of(record)
        if subject is None:
            return
        key = self.keys[subject]
        for name in PERSONAL_FIELDS:
            value = row[name]
            if value is None:
                continue
            nonce = os.urandom(_NONCE_BYTES)
            sealed = key.cipher.encrypt(
                nonce, value.encode(), _field_aad(self.org_id, row["id"], name)
            )
            row[name] = f"{_PREFIX}{key.key_id.hex}:{base64.b64encode(nonce + sealed).decode()}"


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
        keys: dict[uuid.UUID, _DataKey] = {}
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
        keys: dict[uuid.UUID, _DataKey],
        user_id: uuid.UUID,
        key_id: uuid.UUID,
        master_key_id: str,
        wrapped: bytes,
    ) -> None:
        data_key = self.master.unwrap(master_key_id, self.org_id, user_id, key_id, wrapped)
        keys[user_id] = _DataKey(key_id, AESGCM(data_key))


def key_request(ctx: OrgContext, records: Iterable[AuditRecord]) -> KeyRequest | None:
    """None when no record carries a user's personal fields: then encryption costs nothing."""
    subjects = sorted({s for s in map(subject_of, records) if s is not None})
    if not subjects:
        return None
    master = current_master_keys()
    candidates: dict[uuid.UUID, dict[str, str]] = {}
    for user_id in subjects:
        key_id = uuid.uuid4()
        wrapped = master.wrap(ctx.org_id, user_id, key_id, AESGCM.generate_key(bit_length=256))
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


def _parse(value: str) -> tuple[uuid.UUID, bytes] | None:
    if not value.startswith(_PREFIX):
        return None
    key_hex, sep, encoded = value[len(_PREFIX) :].partition(":")
    if not sep:
        return None
    try:
        return uuid.UUID(hex=key_hex), base64.b64decode(encoded, validate=True)
    except ValueError:
        return None


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
        if (value := getattr(event, name)) is not None and (parsed := _parse(value)) is not None
    }
    keys: dict[uuid.UUID, AESGCM | None] = {}
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
                else AESGCM(
                    master.unwrap(
                        row.master_key_id,
                        ctx.org_id,
                        row.user_id,
                        row.key_id,
                        bytes(row.wrapped_key),
                    )
                )
            )

    revealed: list[Revealed] = []
    for event in events:
        shown: dict[str, str | None] = {}
        erased = False
        for name in PERSONAL_FIELDS:
            value = getattr(event, name)
            parsed = _parse(value) if value is not None and _is_sealed(event) else None
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
    cipher: AESGCM | None,
    owners: Mapping[uuid.UUID, uuid.UUID],
) -> str:
    if cipher is None or owners.get(key_id) != _actor_uuid(event):
        _log.error("audit event %s: %s names a key this organization does not hold", event.id, name)
        return UNREADABLE
    try:
        aad = _field_aad(ctx.org_id, event.id, name)
        return cipher.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad).decode()
    except (InvalidTag, UnicodeDecodeError):
        _log.error("audit event %s: %s does not decrypt (altered or moved)", event.id, name)
        return UNREADABLE


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

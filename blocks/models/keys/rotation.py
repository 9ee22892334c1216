"""`blocks keys status` and `blocks keys rotate`: what each master key wraps, and re-wrapping it all.

Master keys wrap three kinds of keys and secrets: organizations' data keys (`org_data_keys`),
people's audit data keys (`audit_subject_keys`) and sealed secrets (Slack bot tokens, and
people's TOTP secrets, which belong to no organization). Rotation wraps every live one again
under the active master key, one organization per transaction, then the TOTP secrets in one of
their own (rows locked, so a concurrent first use or erasure waits). The data keys themselves do
not change, so everything they sealed still opens. Once nothing is wrapped by an older master key
it is marked retired, and only then may it leave BLOCKS_MASTER_KEYS.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.infra.crypto.field_crypto import MasterKeys
from blocks.infra.crypto.org_keys import rewrap_org_key
from blocks.infra.db import bind_org, session_factory
from blocks.models.identity.two_factor import reseal_totp_secrets
from blocks.models.integrations.slack import reseal_bot_tokens
from blocks.models.keys.master_keys import recorded_keys, retire_unused

KINDS = ("organization keys", "person keys", "secrets")

_ORGS = text("SELECT id FROM organizations ORDER BY id")
_USAGE = text(
    "SELECT 'organization keys' AS kind, master_key_id, count(*) AS n FROM org_data_keys"
    " WHERE destroyed_at IS NULL GROUP BY master_key_id"
    " UNION ALL SELECT 'person keys', master_key_id, count(*) FROM audit_subject_keys"
    " WHERE erased_at IS NULL GROUP BY master_key_id"
    " UNION ALL SELECT 'secrets', bot_token_key_id, count(*) FROM slack_installations"
    " GROUP BY bot_token_key_id"
)
# People's TOTP secrets: on `users`, outside every organization (counted once, not per org).
_TOTP_USAGE = text(
    "SELECT totp_key_id AS master_key_id, count(*) AS n FROM users"
    " WHERE totp_key_id IS NOT NULL GROUP BY totp_key_id"
)
_STALE_ORG_KEYS = text(
    "SELECT key_id, master_key_id, wrapped_key FROM org_data_keys"
    " WHERE destroyed_at IS NULL AND master_key_id <> :active FOR UPDATE"
)
_STALE_PERSON_KEYS = text(
    "SELECT key_id, user_id, master_key_id, wrapped_key FROM audit_subject_keys"
    " WHERE erased_at IS NULL AND master_key_id <> :active FOR UPDATE"
)


@dataclass(frozen=True)
class MasterKeyUsage:
    """One master key id: whether configured (and active), recorded, retired, and what it wraps."""

    key_id: str
    configured: bool
    active: bool
    retired: bool
    wraps: Counter[str] = field(default_factory=Counter)

    @property
    def retirable(self) -> bool:
        """Nothing is wrapped by it and it is not the active key: it may leave the config."""
        return not self.active and sum(self.wraps.values()) == 0


async def _org_ids(engine: AsyncEngine) -> list[uuid.UUID]:
    async with session_factory(engine)() as session, session.begin():
        return [row.id for row in (await session.exec(_ORGS)).all()]  # type: ignore[call-overload]


async def key_status(engine: AsyncEngine, master: MasterKeys) -> list[MasterKeyUsage]:
    """Every master key id configured or recorded, with what it wraps across all organizations."""
    wraps: dict[str, Counter[str]] = {}
    for org_id in await _org_ids(engine):
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org_id)
            for row in (await session.exec(_USAGE)).all():  # type: ignore[call-overload]
                wraps.setdefault(row.master_key_id, Counter())[row.kind] += int(row.n)
    async with session_factory(engine)() as session, session.begin():
        for row in (await session.exec(_TOTP_USAGE)).all():  # type: ignore[call-overload]
            wraps.setdefault(row.master_key_id, Counter())["secrets"] += int(row.n)
        recorded = await recorded_keys(session)
    key_ids = [*master.ciphers, *sorted(set(recorded) - set(master.ciphers))]
    key_ids += sorted(set(wraps) - set(key_ids))
    return [
        MasterKeyUsage(
            key_id=key_id,
            configured=key_id in master.ciphers,
            active=key_id == master.active_id,
            retired=recorded.get(key_id, False),
            wraps=wraps.get(key_id, Counter()),
        )
        for key_id in key_ids
    ]


@dataclass
class RotationReport:
    rewrapped: Counter[str] = field(default_factory=Counter)
    organizations: int = 0
    retired: list[str] = field(default_factory=list)


async def rotate(engine: AsyncEngine, master: MasterKeys) -> RotationReport:
    """Wrap every live key and secret again under the active master key; retire the unused."""
    report = RotationReport()
    for org_id in await _org_ids(engine):
        report.organizations += 1
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org_id)
            stale = (await session.exec(_STALE_ORG_KEYS.bindparams(active=master.active_id))).all()  # type: ignore[call-overload]
            for row in stale:
                wrapped = rewrap_org_key(
                    master, row.master_key_id, org_id, row.key_id, row.wrapped_key
                )
                await session.exec(  # type: ignore[call-overload]
                    text(
                        "UPDATE org_data_keys SET master_key_id = :m, wrapped_key = :w"
                        " WHERE key_id = :k"
                    ).bindparams(m=master.active_id, w=wrapped, k=row.key_id)
                )
            report.rewrapped["organization keys"] += len(stale)
            people = (
                await session.exec(_STALE_PERSON_KEYS.bindparams(active=master.active_id))  # type: ignore[call-overload]
            ).all()
            for row in people:
                wrapped = master.rewrap_data_key(
                    row.master_key_id, org_id, row.user_id, row.key_id, row.wrapped_key
                )
                await session.exec(  # type: ignore[call-overload]
                    text(
                        "UPDATE audit_subject_keys SET master_key_id = :m, wrapped_key = :w"
                        " WHERE key_id = :k"
                    ).bindparams(m=master.active_id, w=wrapped, k=row.key_id)
                )
            report.rewrapped["person keys"] += len(people)
            report.rewrapped["secrets"] += await reseal_bot_tokens(session, org_id, master)
    async with session_factory(engine)() as session, session.begin():
        report.rewrapped["secrets"] += await reseal_totp_secrets(session, master)
    in_use = {usage.key_id for usage in await key_status(engine, master) if usage.wraps.total()}
    async with session_factory(engine)() as session, session.begin():
        report.retired = await retire_unused(session, master, in_use)
    return report

"""The master keys' check values: a wrong or missing master key stops a process at start-up.

Every master key id a deployment has used gets a row in `master_key_checks` (migration 0017): a
constant sealed under that key. At start-up each configured key must open its row (a different
key under a known id is refused), and every key id not yet retired must be configured (a key that
still wraps data keys cannot be dropped by mistake). `blocks keys rotate` retires a key once
nothing is wrapped by it any more; only then may it leave BLOCKS_MASTER_KEYS.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.infra.crypto.field_crypto import MasterKeyError, MasterKeys
from blocks.infra.db import session_factory
from blocks.models.base import utcnow

_CHECK_PLAINTEXT = b"blocks master key check v1"
_NONCE_BYTES = 12


def _check_aad(key_id: str) -> bytes:
    return f"blocks.master-key-check.v1|{key_id}".encode()


def check_value(master: MasterKeys, key_id: str) -> bytes:
    """nonce + the check constant sealed under master key `key_id`."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + master.ciphers[key_id].encrypt(nonce, _CHECK_PLAINTEXT, _check_aad(key_id))


def opens_check(master: MasterKeys, key_id: str, value: bytes) -> bool:
    try:
        opened = master.ciphers[key_id].decrypt(
            value[:_NONCE_BYTES], value[_NONCE_BYTES:], _check_aad(key_id)
        )
    except InvalidTag:
        return False
    return opened == _CHECK_PLAINTEXT


_CHECKS = text("SELECT master_key_id, check_value, retired_at FROM master_key_checks")
_RECORD = text(
    "INSERT INTO master_key_checks (master_key_id, check_value, created_at, retired_at) "
    "VALUES (:key_id, :value, :now, NULL) "
    "ON CONFLICT (master_key_id) DO NOTHING"
)
_UNRETIRE = text(
    "UPDATE master_key_checks SET retired_at = NULL "
    "WHERE master_key_id = :key_id AND retired_at IS NOT NULL"
)


async def verify_master_keys(session: AsyncSession, master: MasterKeys) -> None:
    """Refuse a configuration whose keys do not match the database's; record new key ids.

    Raises MasterKeyError naming the key and what to do. The active key is un-retired: it is
    about to wrap new data keys.
    """
    rows = {row.master_key_id: row for row in (await session.exec(_CHECKS)).all()}  # type: ignore[call-overload]
    for key_id, row in rows.items():
        if key_id in master.ciphers:
            if not opens_check(master, key_id, row.check_value):
                raise MasterKeyError(
                    f"BLOCKS_MASTER_KEYS: key {key_id!r} is not the key this database knows by"
                    " that id (its check value does not open); restore the original key"
                )
        elif row.retired_at is None:
            raise MasterKeyError(
                f"BLOCKS_MASTER_KEYS lacks key {key_id!r}, which may still wrap data keys; put it"
                " back after the active key and run `blocks keys rotate` before removing it"
            )
    now = utcnow()
    for key_id in master.ciphers:
        if key_id not in rows:
            await session.exec(  # type: ignore[call-overload]
                _RECORD.bindparams(key_id=key_id, value=check_value(master, key_id), now=now)
            )
    await session.exec(_UNRETIRE.bindparams(key_id=master.active_id))  # type: ignore[call-overload]
    # A concurrent first start may have recorded a key id first: its row must open too.
    fresh = [key_id for key_id in master.ciphers if key_id not in rows]
    if fresh:
        for row in (await session.exec(_CHECKS)).all():  # type: ignore[call-overload]
            if row.master_key_id in fresh and not opens_check(
                master, row.master_key_id, row.check_value
            ):
                raise MasterKeyError(
                    f"BLOCKS_MASTER_KEYS: key {row.master_key_id!r} differs from the key another"
                    " process recorded under that id"
                )


async def retire_unused(session: AsyncSession, master: MasterKeys, in_use: set[str]) -> list[str]:
    """Mark every recorded key id other than the active one and not in `in_use` retired."""
    retired = []
    for row in (await session.exec(_CHECKS)).all():  # type: ignore[call-overload]
        key_id = row.master_key_id
        if key_id != master.active_id and key_id not in in_use and row.retired_at is None:
            await session.exec(  # type: ignore[call-overload]
                text(
                    "UPDATE master_key_checks SET retired_at = :now WHERE master_key_id = :key_id"
                ).bindparams(now=utcnow(), key_id=key_id)
            )
            retired.append(key_id)
    return retired


async def recorded_keys(session: AsyncSession) -> dict[str, bool]:
    """Every recorded master key id -> whether it is retired."""
    rows = (await session.exec(_CHECKS)).all()  # type: ignore[call-overload]
    return {row.master_key_id: row.retired_at is not None for row in rows}


async def check_master_keys(engine: AsyncEngine, master: MasterKeys) -> None:
    """`verify_master_keys` in a transaction of its own: what a process runs as it starts."""
    async with session_factory(engine)() as session, session.begin():
        await verify_master_keys(session, master)

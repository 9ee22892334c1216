"""A person's second factor: the sealed TOTP secret on `users` and single-use backup codes.

Setting up is two steps: `begin_setup` stores a new secret (sealed under the master keys)
without enabling it, `confirm_setup` enables it once a first code proves the person's
authenticator holds it. `verify_second_factor` is the one check every caller uses (sign-in,
password reset, changes to 2FA): a TOTP code is accepted only for a time step later than the
last one accepted, and a backup code only once, each claimed by a conditional UPDATE so two
concurrent requests with the same code cannot both pass.

Backup codes belong to a person before any organization is chosen, so they carry no row-level
security; every query here names the person.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, func, or_, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.infra.crypto.field_crypto import MasterKeys, current_master_keys
from blocks.infra.crypto.totp import (
    backup_code_matches,
    hash_backup_code,
    new_backup_codes,
    new_totp_secret,
    normalize_backup_code,
    provisioning_uri,
    verify_totp,
)
from blocks.models.base import new_id, timestamp_column, user_fk_column, utcnow
from blocks.models.identity.orgs import User

SecondFactor = Literal["totp", "backup_code"]


class TwoFactorAlreadyEnabled(Exception):
    """Two-factor sign-in is already on: disable it before setting up a new secret."""


class UserBackupCode(SQLModel, table=True):
    __tablename__ = "user_backup_codes"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    code_hash: str = Field(max_length=64, repr=False)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


def _binding(user_id: uuid.UUID) -> str:
    # Associated data: a sealed secret copied onto another person's row does not open.
    return f"totp:{user_id}"


def _sync(user: User, **values: object) -> None:
    """Mirror what an UPDATE statement wrote onto the loaded object, without marking it dirty
    (a later flush must not write the columns again from a stale read)."""
    for name, value in values.items():
        set_committed_value(user, name, value)


def _open_secret(user: User) -> str | None:
    if user.totp_key_id is None or user.totp_secret_sealed is None:
        return None
    return current_master_keys().open_secret(
        user.totp_key_id, _binding(user.id), user.totp_secret_sealed
    )


async def reseal_totp_secrets(db: AsyncSession, master: MasterKeys) -> int:
    """Seal every TOTP secret (enabled or pending) sealed under an older master key again under
    the active one (`blocks keys rotate`), rows locked; how many. The secret itself is unchanged,
    so authenticators keep working."""
    stale = (
        await db.exec(
            select(User.id, User.totp_key_id, User.totp_secret_sealed)
            .where(
                col(User.totp_key_id).is_not(None),
                col(User.totp_secret_sealed).is_not(None),
                col(User.totp_key_id) != master.active_id,
            )
            .with_for_update()
        )
    ).all()
    for user_id, master_key_id, sealed_secret in stale:
        key_id, sealed = master.reseal_secret(master_key_id, _binding(user_id), sealed_secret)
        await db.exec(  # type: ignore[call-overload]
            update(User)
            .where(col(User.id) == user_id)
            .values(totp_key_id=key_id, totp_secret_sealed=sealed)
            .execution_options(synchronize_session=False)
        )
    return len(stale)


def is_enabled(user: User) -> bool:
    return user.totp_enabled_at is not None


def has_pending_setup(user: User) -> bool:
    return user.totp_enabled_at is None and user.totp_secret_sealed is not None


async def begin_setup(db: AsyncSession, user: User) -> tuple[str, str]:
    """A new secret and its otpauth:// URI, stored sealed but not enabled (replacing any earlier
    pending setup). Raises TwoFactorAlreadyEnabled if two-factor sign-in is already on."""
    if is_enabled(user):
        raise TwoFactorAlreadyEnabled
    secret = new_totp_secret()
    key_id, sealed = current_master_keys().seal_secret(_binding(user.id), secret)
    values = {
        "totp_key_id": key_id,
        "totp_secret_sealed": sealed,
        "totp_enabled_at": None,
        "totp_last_counter": None,
    }
    # Conditional: a setup racing a concurrent enable must not swap the enabled secret.
    result = await db.exec(  # type: ignore[call-overload]
        update(User)
        .where(col(User.id) == user.id, col(User.totp_enabled_at).is_(None))
        .values(**values)
        .returning(col(User.id))
        .execution_options(synchronize_session=False)
    )
    if result.first() is None:
        raise TwoFactorAlreadyEnabled
    _sync(user, **values)
    return secret, provisioning_uri(secret, account=user.email)


async def confirm_setup(db: AsyncSession, user: User, code: str, now: datetime) -> list[str] | None:
    """Enable the pending secret if `code` proves it: the new backup codes in plaintext (shown
    once; only their hashes are kept), or None (no pending setup, or a wrong code)."""
    if not has_pending_setup(user):
        return None
    sealed = user.totp_secret_sealed
    secret = _open_secret(user)
    if secret is None:
        return None
    counter = verify_totp(secret, code, last_used_counter=None, now=now)
    if counter is None:
        return None
    # Conditional on the very secret the code was checked against, still pending.
    result = await db.exec(  # type: ignore[call-overload]
        update(User)
        .where(
            col(User.id) == user.id,
            col(User.totp_enabled_at).is_(None),
            col(User.totp_secret_sealed) == sealed,
        )
        .values(totp_enabled_at=now, totp_last_counter=counter)
        .returning(col(User.id))
        .execution_options(synchronize_session=False)
    )
    if result.first() is None:
        return None
    _sync(user, totp_enabled_at=now, totp_last_counter=counter)
    return await regenerate_backup_codes(db, user)


async def _claim_totp(db: AsyncSession, user: User, code: str, now: datetime) -> bool:
    secret = _open_secret(user)
    if secret is None:
        return False
    counter = verify_totp(secret, code, last_used_counter=user.totp_last_counter, now=now)
    if counter is None:
        return False
    # The row lock makes a concurrent request with the same code wait, then find the counter
    # already at this step and update nothing.
    result = await db.exec(  # type: ignore[call-overload]
        update(User)
        .where(
            col(User.id) == user.id,
            col(User.totp_enabled_at).is_not(None),
            or_(col(User.totp_last_counter).is_(None), col(User.totp_last_counter) < counter),
        )
        .values(totp_last_counter=counter)
        .returning(col(User.id))
        .execution_options(synchronize_session=False)
    )
    if result.first() is None:
        return False
    _sync(user, totp_last_counter=counter)
    return True


async def _claim_backup_code(db: AsyncSession, user: User, code: str, now: datetime) -> bool:
    unused = (
        await db.exec(
            select(UserBackupCode.id, UserBackupCode.code_hash).where(
                UserBackupCode.user_id == user.id, col(UserBackupCode.used_at).is_(None)
            )
        )
    ).all()
    matched: uuid.UUID | None = None
    # Every unused code is compared (no early exit), so timing says nothing about which matched.
    for code_id, code_hash in unused:
        if backup_code_matches(code, code_hash):
            matched = code_id
    if matched is None:
        return False
    result = await db.exec(  # type: ignore[call-overload]
        update(UserBackupCode)
        .where(col(UserBackupCode.id) == matched, col(UserBackupCode.used_at).is_(None))
        .values(used_at=now)
        .returning(col(UserBackupCode.id))
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


async def verify_second_factor(
    db: AsyncSession, user: User, code: str, now: datetime
) -> SecondFactor | None:
    """Which factor `code` proved ("totp" or "backup_code"), consuming it, or None: wrong,
    already used, or two-factor sign-in is not enabled. Nothing is consumed on None."""
    if not is_enabled(user):
        return None
    if normalize_backup_code(code) is not None:
        return "backup_code" if await _claim_backup_code(db, user, code, now) else None
    return "totp" if await _claim_totp(db, user, code, now) else None


async def disable(db: AsyncSession, user: User) -> None:
    """Turn two-factor sign-in off: the secret, its state and every backup code are removed."""
    values = {
        "totp_key_id": None,
        "totp_secret_sealed": None,
        "totp_enabled_at": None,
        "totp_last_counter": None,
    }
    await db.exec(  # type: ignore[call-overload]
        update(User)
        .where(col(User.id) == user.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    _sync(user, **values)
    await db.exec(  # type: ignore[call-overload]
        delete(UserBackupCode).where(col(UserBackupCode.user_id) == user.id)
    )


async def regenerate_backup_codes(db: AsyncSession, user: User) -> list[str]:
    """Replace every backup code of the person with new ones; the plaintext, shown once."""
    await db.exec(  # type: ignore[call-overload]
        delete(UserBackupCode).where(col(UserBackupCode.user_id) == user.id)
    )
    codes = new_backup_codes()
    now = utcnow()
    db.add_all(
        UserBackupCode(user_id=user.id, code_hash=hash_backup_code(code), created_at=now)
        for code in codes
    )
    await db.flush()
    return codes


async def remaining_backup_codes(db: AsyncSession, user: User) -> int:
    statement = select(func.count()).where(
        UserBackupCode.user_id == user.id, col(UserBackupCode.used_at).is_(None)
    )
    return int((await db.exec(statement)).one())

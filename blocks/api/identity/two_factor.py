"""The signed-in person's two-factor sign-in: set up, enable, disable, new backup codes.

These routes need a signed-in session but no organization, so a member of an organization that
requires two-factor sign-in (whose session may not enter it yet) can enroll. Every change asks
again who is at the keyboard (the password, or a fresh sign-in for a person without one), and
disabling or replacing backup codes also asks for a current code. Each change, and each refused
attempt, is audited in the platform chain and in every organization the person belongs to;
no secret or code is ever logged or audited.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from blocks.api import rate_limit
from blocks.api.deps import DbSession, Person
from blocks.api.errors import Problem
from blocks.api.identity.me import require_recent_proof
from blocks.api.identity.sessions import SignedIn
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import record_security_event
from blocks.core.audit.records import Outcome
from blocks.infra.crypto.passwords import MAX_PASSWORD_LENGTH
from blocks.models.base import utcnow
from blocks.models.identity import two_factor
from blocks.models.identity.orgs import User, active_org_ids
from blocks.models.identity.sessions import revoke_sessions

router = APIRouter(prefix="/v1/me/2fa", tags=["identity"])

_CODE = Field(min_length=1, max_length=40, description="A code from the authenticator app")
_PASSWORD = Field(
    default=None,
    max_length=MAX_PASSWORD_LENGTH,
    description="Your password (a person without one needs a recent sign-in instead)",
)


class TwoFactorOut(BaseModel):
    model_config = example(enabled=True, pending_setup=False, remaining_backup_codes=8)

    enabled: bool
    pending_setup: bool = Field(description="A setup was started and awaits its first code")
    remaining_backup_codes: int


class SetupIn(StrictModel):
    model_config = example(password=ex.PASSWORD)

    password: str | None = _PASSWORD


class SetupOut(BaseModel):
    model_config = example(
        secret=ex.TOTP_SECRET,
        provisioning_uri="otpauth://totp/Blocks:alan%40acme.example"
        f"?secret={ex.TOTP_SECRET}&issuer=Blocks",
    )

    secret: str = Field(description="Base32 secret, for typing into an authenticator app")
    provisioning_uri: str = Field(description="otpauth:// URI, usually shown as a QR code")


class EnableIn(StrictModel):
    model_config = example(code="492039")

    code: str = _CODE


class BackupCodesOut(BaseModel):
    model_config = example(backup_codes=ex.BACKUP_CODES)

    backup_codes: list[str] = Field(
        description="Single-use codes for when the authenticator is unavailable; shown only now"
    )


class ConfirmedIn(StrictModel):
    model_config = example(password=ex.PASSWORD, code="492039")

    password: str | None = _PASSWORD
    code: str = Field(
        min_length=1,
        max_length=40,
        description="A code from the authenticator app or a backup code",
    )


async def _count_attempt(request: Request, signed: SignedIn) -> None:
    """Count a change against the person's second-factor attempt limit."""
    await rate_limit.enforce(request, "2fa_account", f"user:{signed.user.id}")


async def _audit(
    request: Request,
    db: DbSession,
    user: User,
    action: str,
    *,
    outcome: Outcome = Outcome.SUCCESS,
    reason: str | None = None,
    data: dict[str, object] | None = None,
) -> None:
    await record_security_event(
        request,
        action=action,
        outcome=outcome,
        reason=reason,
        user_id=user.id,
        email=user.email,
        data=data,
        org_ids=await active_org_ids(db, user.id),
    )


def _conflict(detail: str, code: str) -> Problem:
    return Problem(409, "Conflict", detail, code=code)


def _wrong_code(detail: str) -> Problem:
    return Problem(
        400,
        "Invalid Code",
        detail,
        code="invalid_two_factor_code",
        errors=[{"field": "code", "reason": detail}],
    )


def _not_enabled() -> Problem:
    return _conflict("two-factor sign-in is not enabled", "two_factor_not_enabled")


async def _require_second_factor(
    request: Request, db: DbSession, user: User, code: str, action: str
) -> str:
    """The factor `code` proved (consumed), or a 400 with an audited failure."""
    method = await two_factor.verify_second_factor(db, user, code, utcnow())
    if method is None:
        await _audit(
            request, db, user, action, outcome=Outcome.FAILURE, reason="wrong or used code"
        )
        raise _wrong_code("the code is wrong or was already used")
    return method


@router.get(
    "",
    response_model=TwoFactorOut,
    summary="Read your two-factor sign-in status",
    operation_id="read_two_factor",
)
async def status(signed: Person, request: Request, db: DbSession) -> TwoFactorOut:
    user = signed.user
    enabled = two_factor.is_enabled(user)
    return TwoFactorOut(
        enabled=enabled,
        pending_setup=two_factor.has_pending_setup(user),
        remaining_backup_codes=await two_factor.remaining_backup_codes(db, user) if enabled else 0,
    )


@router.post(
    "/setup",
    response_model=SetupOut,
    summary="Start setting up two-factor sign-in",
    operation_id="set_up_two_factor",
)
async def setup(signed: Person, body: SetupIn, request: Request, db: DbSession) -> SetupOut:
    """Start setting up: a new secret, enabled only once `/enable` receives a code from it."""
    await _count_attempt(request, signed)
    user = signed.user
    if two_factor.is_enabled(user):
        raise _conflict(
            "two-factor sign-in is already enabled; disable it first", "two_factor_enabled"
        )
    await require_recent_proof(request, db, signed, body.password, "two_factor.setup_started")
    try:
        secret, uri = await two_factor.begin_setup(db, user)
    except two_factor.TwoFactorAlreadyEnabled:
        raise _conflict(
            "two-factor sign-in is already enabled; disable it first", "two_factor_enabled"
        ) from None
    await _audit(request, db, user, "two_factor.setup_started")
    return SetupOut(secret=secret, provisioning_uri=uri)


@router.post(
    "/enable",
    response_model=BackupCodesOut,
    summary="Turn two-factor sign-in on",
    operation_id="enable_two_factor",
)
async def enable(signed: Person, body: EnableIn, request: Request, db: DbSession) -> BackupCodesOut:
    """Prove the authenticator holds the new secret; two-factor sign-in is on from now, and
    every other session of the person (which never proved the second factor) ends."""
    await _count_attempt(request, signed)
    user = signed.user
    if two_factor.is_enabled(user):
        raise _conflict("two-factor sign-in is already enabled", "two_factor_enabled")
    if not two_factor.has_pending_setup(user):
        raise _conflict("start with POST /v1/me/2fa/setup", "two_factor_setup_missing")
    codes = await two_factor.confirm_setup(db, user, body.code, utcnow())
    if codes is None:
        await _audit(
            request, db, user, "two_factor.enabled", outcome=Outcome.FAILURE, reason="wrong code"
        )
        raise _wrong_code("the code does not match the secret being set up")
    revoked = await revoke_sessions(
        db, user_id=user.id, reason="two-factor enabled", keep=signed.session.id
    )
    await _audit(
        request,
        db,
        user,
        "two_factor.enabled",
        data={"backup_codes": len(codes), "other_sessions_revoked": len(revoked)},
    )
    return BackupCodesOut(backup_codes=codes)


@router.post(
    "/disable",
    status_code=204,
    summary="Turn two-factor sign-in off",
    operation_id="disable_two_factor",
)
async def disable(signed: Person, body: ConfirmedIn, request: Request, db: DbSession) -> Response:
    await _count_attempt(request, signed)
    user = signed.user
    if not two_factor.is_enabled(user):
        raise _not_enabled()
    await require_recent_proof(request, db, signed, body.password, "two_factor.disabled")
    method = await _require_second_factor(request, db, user, body.code, "two_factor.disabled")
    await two_factor.disable(db, user)
    await _audit(request, db, user, "two_factor.disabled", data={"method": method})
    return Response(status_code=204)


@router.post("/backup-codes", response_model=BackupCodesOut, summary="Replace your backup codes")
async def new_backup_codes(
    signed: Person, body: ConfirmedIn, request: Request, db: DbSession
) -> BackupCodesOut:
    """Replace every backup code (used or not) with new ones."""
    await _count_attempt(request, signed)
    user = signed.user
    if not two_factor.is_enabled(user):
        raise _not_enabled()
    action = "two_factor.backup_codes_regenerated"
    await require_recent_proof(request, db, signed, body.password, action)
    method = await _require_second_factor(request, db, user, body.code, action)
    codes = await two_factor.regenerate_backup_codes(db, user)
    await _audit(request, db, user, action, data={"method": method, "backup_codes": len(codes)})
    return BackupCodesOut(backup_codes=codes)

"""Who an identity provider's sign-in is in Blocks: accounts keyed on (provider, subject), created
just in time, linked to an existing account only on proof, refreshed at every sign-in.

The protocol (OIDC or SAML) proves an `ExternalProfile`; `resolve_account` turns it into a
member of the organization or refuses with a reason. An existing account (found by email) is
linked only when the provider verified the email and the organization verified its domain, or
when the organization's own SCIM provisioning made that member: an email alone never is a key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.infra.identity.provider_config import AccountPolicy
from blocks.models.base import new_id, org_fk_column, text_array_column, timestamp_column, utcnow
from blocks.models.identity.members import Member, get_member
from blocks.models.identity.orgs import Membership, User, find_user_by_email
from blocks.models.identity.sso.domains import verified_domains
from blocks.models.identity.sso.idp_groups import GroupChange, apply_idp_groups
from blocks.models.identity.sso.providers import IdentityProvider


@dataclass(frozen=True)
class ExternalProfile:
    """What a protocol proved about the person, protocol-neutral."""

    subject: str  # OIDC `sub` / SAML NameID: the account's key at this provider
    email: str | None
    email_verified: bool  # OIDC email_verified; SAML: the signed assertion vouches for it
    display_name: str | None
    groups: tuple[str, ...]
    mfa: bool  # the protocol's MFA evidence matched the provider's mfa_values
    protocol: str  # "oidc" | "saml"


class ExternalIdentity(SQLModel, table=True):
    __tablename__ = "external_identities"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    provider_id: uuid.UUID = Field(foreign_key="identity_providers.id")
    subject: str = Field(max_length=255)
    user_id: uuid.UUID = Field(foreign_key="users.id")
    email: str | None = Field(default=None, max_length=320)
    display_name: str | None = Field(default=None, max_length=200)
    groups: list[str] = Field(default_factory=list, sa_column=text_array_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    last_sign_in_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )


class AccountRefused(Exception):
    """The provider proved someone Blocks will not let in; `reason` is audited, `detail` shown."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason


@dataclass
class ResolvedAccount:
    """The member a sign-in resolved to, and what resolving it did (for the audit events)."""

    member: Member
    identity: ExternalIdentity
    created_account: bool = False  # a new person (just in time)
    created_membership: bool = False  # a new member of the organization (just in time)
    linked: bool = False  # an identity joined to an account that existed before
    email_changed_from: str | None = None
    groups: GroupChange | None = None
    notes: list[str] = field(default_factory=list)


def _domain(email: str) -> str:
    return email.rpartition("@")[2].lower()


async def _identity(
    ctx: OrgContext, db: AsyncSession, provider_id: uuid.UUID, subject: str
) -> ExternalIdentity | None:
    await bind_org(db, ctx.org_id)
    statement = select(ExternalIdentity).where(
        ExternalIdentity.org_id == ctx.org_id,
        ExternalIdentity.provider_id == provider_id,
        ExternalIdentity.subject == subject,
    )
    return (await db.exec(statement)).first()


async def _provisioned_by_scim(ctx: OrgContext, db: AsyncSession, user_id: uuid.UUID) -> bool:
    """Whether the organization's SCIM provisioning made this person a member (then its identity
    provider already vouched for who they are)."""
    await bind_org(db, ctx.org_id)
    result = await db.exec(  # type: ignore[call-overload]
        text(
            "SELECT EXISTS (SELECT FROM scim_users WHERE org_id = :org AND user_id = :user)"
        ).bindparams(org=ctx.org_id, user=user_id)
    )
    return bool(result.scalar())


def _check_policy(policy: AccountPolicy, profile: ExternalProfile) -> str:
    """The profile's email if the provider's policy lets this profile in; else AccountRefused."""
    if not profile.subject:
        raise AccountRefused("the provider sent no subject")
    if not profile.email or "@" not in profile.email:
        raise AccountRefused(
            "the provider sent no email address", "your identity provider sent no email address"
        )
    email = profile.email.strip().lower()
    if policy.allowed_domains and _domain(email) not in policy.allowed_domains:
        raise AccountRefused(
            f"email domain {_domain(email)} is not allowed for this provider",
            "your email domain may not sign in through this identity provider",
        )
    if policy.require_mfa and not profile.mfa:
        raise AccountRefused(
            "the provider did not assert multi-factor authentication",
            "this organization requires multi-factor authentication at your identity provider",
        )
    return email


async def _existing_account(
    ctx: OrgContext, db: AsyncSession, policy: AccountPolicy, profile: ExternalProfile, email: str
) -> tuple[User | None, bool]:
    """The account the sign-in may join (found by email, linked only on proof) and whether it
    is a new link; None when there is none to join."""
    user = await find_user_by_email(db, email)
    if user is None:
        return None, False
    if await _provisioned_by_scim(ctx, db, user.id):
        return user, True
    if not profile.email_verified:
        raise AccountRefused(
            "an account with this email exists and the provider did not verify the email",
            "an account with this email exists; your identity provider did not verify the "
            "address, so it cannot be linked",
        )
    if _domain(email) not in await verified_domains(ctx, db):
        raise AccountRefused(
            f"an account with this email exists and the organization has not verified "
            f"{_domain(email)}",
            "an account with this email exists; the organization has not verified this email "
            "domain, so it cannot be linked",
        )
    return user, True


async def resolve_account(
    ctx: OrgContext,
    db: AsyncSession,
    provider: IdentityProvider,
    policy: AccountPolicy,
    profile: ExternalProfile,
) -> ResolvedAccount:
    """The active member this sign-in is, creating or linking as the rules allow, with name,
    email and groups refreshed; AccountRefused (with the reason) otherwise."""
    email = _check_policy(policy, profile)
    now = utcnow()
    identity = await _identity(ctx, db, provider.id, profile.subject)
    created_account = created_membership = linked = False
    if identity is not None:
        user = await db.get(User, identity.user_id)
        if user is None:  # a foreign key holds it; read as a refusal rather than crash
            raise AccountRefused("the linked account is gone")
    else:
        user, linked = await _existing_account(ctx, db, policy, profile, email)
        if user is None:
            if not policy.jit_provisioning:
                raise AccountRefused(
                    "no account and just-in-time provisioning is off",
                    "you have no account in this organization; ask an admin to add you",
                )
            user = User(
                email=email,
                display_name=(profile.display_name or email)[:200],
                email_verified_at=now if profile.email_verified else None,
            )
            db.add(user)
            await db.flush()
            created_account = True
        identity = ExternalIdentity(
            org_id=ctx.org_id, provider_id=provider.id, subject=profile.subject, user_id=user.id
        )
    if user.deactivated_at is not None:
        raise AccountRefused("account deactivated", "this account is deactivated")
    member = await get_member(ctx, db, user.id)
    if member is None:
        if not policy.jit_provisioning:
            raise AccountRefused(
                "not a member and just-in-time provisioning is off",
                "you are not a member of this organization; ask an admin to add you",
            )
        db.add(Membership(org_id=ctx.org_id, user_id=user.id, roles=[], managed_by="idp"))
        await db.flush()
        member = await get_member(ctx, db, user.id)
        assert member is not None
        created_membership = True
    if not member.active:
        raise AccountRefused(
            "member deactivated", "your membership of this organization is deactivated"
        )
    resolved = ResolvedAccount(
        member=member,
        identity=identity,
        created_account=created_account,
        created_membership=created_membership,
        linked=linked,
    )
    await _refresh(ctx, db, resolved, profile, email, now)
    resolved.groups = await apply_idp_groups(ctx, db, member, profile.groups)
    return resolved


async def _refresh(
    ctx: OrgContext,
    db: AsyncSession,
    resolved: ResolvedAccount,
    profile: ExternalProfile,
    email: str,
    now: datetime,
) -> None:
    """Name, email and groups as the provider says now. The account's own email (shared by the
    person's other organizations) follows only a verified address in a domain this
    organization verified, and never one another account holds."""
    identity, user = resolved.identity, resolved.member.user
    identity.email = email
    identity.display_name = (profile.display_name or "")[:200] or None
    identity.groups = list(profile.groups)
    identity.last_sign_in_at = now
    db.add(identity)
    if profile.display_name and user.display_name != profile.display_name[:200]:
        user.display_name = profile.display_name[:200]
    if (
        user.email != email
        and profile.email_verified
        and _domain(email) in await verified_domains(ctx, db)
        and await find_user_by_email(db, email) is None
    ):
        resolved.email_changed_from = user.email
        user.email = email
        user.email_verified_at = now
    elif user.email != email:
        resolved.notes.append("the provider's email differs from the account's; kept")
    db.add(user)
    await db.flush()


async def erase_provider_copies(ctx: OrgContext, db: AsyncSession, user_id: uuid.UUID) -> int:
    """Forget what the organization's identity providers said about a person (the identities'
    email, name and groups, the SCIM resource's attributes), for an erasure of their personal
    data; the keys (provider, subject; SCIM id) stay so the provider still finds its own record.
    How many rows were cleared."""
    await bind_org(db, ctx.org_id)
    cleared = 0
    for statement in (
        "UPDATE external_identities SET email = NULL, display_name = NULL, groups = '{}' "
        "WHERE org_id = :org AND user_id = :user",
        "UPDATE scim_users SET attributes = '{}' WHERE org_id = :org AND user_id = :user",
    ):
        result = await db.exec(  # type: ignore[call-overload]
            text(statement).bindparams(org=ctx.org_id, user=user_id)
        )
        cleared += int(result.rowcount or 0)
    return cleared

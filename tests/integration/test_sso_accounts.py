"""Who an identity provider's sign-in becomes: keyed on (provider, subject), created just in
time with roles from the group table (deny by default), linked to an existing account only on a
verified email in a verified domain, refreshed at every sign-in, refused with a reason."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import session_factory
from blocks.infra.identity.provider_config import OidcConfig
from blocks.models.approvals.groups import create_group, list_groups
from blocks.models.identity.members import deactivate_member, get_member
from blocks.models.identity.sso.accounts import (
    AccountRefused,
    ExternalProfile,
    erase_provider_copies,
    resolve_account,
)
from blocks.models.identity.sso.domains import claim_domain, mark_verified
from blocks.models.identity.sso.idp_groups import replace_mappings
from blocks.models.identity.sso.providers import IdentityProvider, Protocol, create_provider
from tests.support import Org, make_org

POLICY = OidcConfig(issuer="https://idp.example.com", client_id="blocks", jit_provisioning=True)


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """One transaction per test, rolled back: each test sees only what it wrote."""
    async with session_factory(engine)() as session:
        yield session
        await session.rollback()


def _ctx(org: Org) -> OrgContext:
    return OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


async def _provider(db: AsyncSession, org: Org) -> IdentityProvider:
    return await create_provider(
        _ctx(org),
        db,
        name=f"idp-{uuid.uuid4().hex[:6]}",
        protocol=Protocol.OIDC,
        config=POLICY.model_dump(),
        secret=None,
    )


def _profile(email: str, *groups: str, verified: bool = True, subject: str = "") -> ExternalProfile:
    return ExternalProfile(
        subject=subject or f"sub-{uuid.uuid4().hex}",
        email=email,
        email_verified=verified,
        display_name="Jo Doe",
        groups=groups,
        mfa=False,
        protocol="oidc",
    )


async def test_a_new_person_gets_an_account_with_roles_and_groups_from_the_table_only(
    engine: AsyncEngine, db: AsyncSession
) -> None:
    org = await make_org(engine)
    ctx, provider = _ctx(org), await _provider(db, org)
    finance = await create_group(ctx, db, "finance")
    assert finance is not None
    await replace_mappings(
        ctx, db, [("Approvers", [Role.APPROVER], None), ("Finance", [], finance.id)]
    )
    email = f"jo-{uuid.uuid4().hex[:6]}@corp.example"
    account = await resolve_account(
        ctx, db, provider, POLICY, _profile(email, "Approvers", "Finance", "Unmapped")
    )
    assert account.created_account
    assert account.created_membership
    assert account.member.membership.managed_by == "idp"
    assert account.member.membership.roles == ["approver"]
    groups = dict((g.name, members) for g, members in await list_groups(ctx, db))
    assert account.member.user.id in groups["finance"]

    # Next sign-in: the provider dropped Approvers; the role goes, and says so.
    again = await resolve_account(
        ctx, db, provider, POLICY, replace(_profile(email), subject=account.identity.subject)
    )
    assert not again.created_account
    assert again.member.user.id == account.member.user.id
    assert again.groups is not None
    assert again.groups.roles_changed
    assert again.member.membership.roles == []  # deny by default: no mapped group, no role
    assert again.groups.member_groups_removed == [finance.id]


async def test_without_jit_an_unknown_person_is_refused_with_the_reason(
    engine: AsyncEngine, db: AsyncSession
) -> None:
    org = await make_org(engine)
    provider = await _provider(db, org)
    policy = POLICY.model_copy(update={"jit_provisioning": False})
    with pytest.raises(AccountRefused, match="just-in-time provisioning is off"):
        await resolve_account(_ctx(org), db, provider, policy, _profile("new@corp.example"))


async def test_an_existing_account_is_linked_only_on_a_verified_email_in_a_verified_domain(
    engine: AsyncEngine, db: AsyncSession
) -> None:
    org = await make_org(engine)
    ctx, provider = _ctx(org), await _provider(db, org)
    approver = org["approver"]
    domain = approver.email.rpartition("@")[2]
    with pytest.raises(AccountRefused, match="did not verify the email"):
        await resolve_account(ctx, db, provider, POLICY, _profile(approver.email, verified=False))
    with pytest.raises(AccountRefused, match=f"has not verified {domain}"):
        await resolve_account(ctx, db, provider, POLICY, _profile(approver.email))
    claim = await claim_domain(ctx, db, domain)
    await mark_verified(ctx, db, claim, by="operator")
    linked = await resolve_account(ctx, db, provider, POLICY, _profile(approver.email))
    assert linked.linked
    assert not linked.created_account
    assert linked.member.user.id == approver.user_id
    # An admin-managed member keeps the roles an admin gave, whatever the groups say.
    assert linked.member.membership.roles == ["approver"]


async def test_the_account_is_keyed_on_the_subject_not_the_email(
    engine: AsyncEngine, db: AsyncSession
) -> None:
    org = await make_org(engine)
    ctx, provider = _ctx(org), await _provider(db, org)
    first = await resolve_account(ctx, db, provider, POLICY, _profile("a1@corp.example"))
    # Same subject, new address (renamed at the provider): the same person, email refreshed
    # on the identity; the account's own address does not follow an unverified domain.
    renamed = await resolve_account(
        ctx,
        db,
        provider,
        POLICY,
        replace(_profile("a2@corp.example"), subject=first.identity.subject),
    )
    assert renamed.member.user.id == first.member.user.id
    assert renamed.identity.email == "a2@corp.example"
    assert renamed.member.user.email == "a1@corp.example"
    # Another subject claiming the first address is a different person: it cannot take over.
    with pytest.raises(AccountRefused, match=r"has not verified corp\.example"):
        await resolve_account(ctx, db, provider, POLICY, _profile("a1@corp.example"))


async def test_policy_refusals_domain_mfa_and_deactivated_members(
    engine: AsyncEngine, db: AsyncSession
) -> None:
    org = await make_org(engine)
    ctx, provider = _ctx(org), await _provider(db, org)
    only_corp = POLICY.model_copy(update={"allowed_domains": ["corp.example"]})
    with pytest.raises(AccountRefused, match=r"evil\.example is not allowed"):
        await resolve_account(ctx, db, provider, only_corp, _profile("x@evil.example"))
    with_mfa = POLICY.model_copy(update={"require_mfa": True})
    with pytest.raises(AccountRefused, match="did not assert multi-factor"):
        await resolve_account(ctx, db, provider, with_mfa, _profile("y@corp.example"))
    made = await resolve_account(
        ctx, db, provider, with_mfa, replace(_profile("y@corp.example"), mfa=True)
    )
    member = await get_member(ctx, db, made.member.user.id)
    assert member is not None
    await deactivate_member(ctx, db, member, by=None)
    with pytest.raises(AccountRefused, match="member deactivated"):
        await resolve_account(
            ctx,
            db,
            provider,
            POLICY,
            replace(_profile("y@corp.example"), subject=made.identity.subject),
        )


async def test_a_provider_never_demotes_the_last_owner(
    engine: AsyncEngine, db: AsyncSession
) -> None:
    org = await make_org(engine)
    ctx, provider = _ctx(org), await _provider(db, org)
    await replace_mappings(ctx, db, [("Owners", [Role.OWNER], None)])
    first = await resolve_account(
        ctx, db, provider, POLICY, _profile("boss@corp.example", "Owners")
    )
    assert first.member.membership.roles == ["owner"]
    # The organization's original owner leaves; the provider-made owner is the last one.
    original = await get_member(ctx, db, org["owner"].user_id)
    assert original is not None
    await deactivate_member(ctx, db, original, by=None)
    again = await resolve_account(
        ctx,
        db,
        provider,
        POLICY,
        replace(_profile("boss@corp.example"), subject=first.identity.subject),
    )
    assert again.groups is not None
    assert again.groups.kept_last_owner
    assert again.member.membership.roles == ["owner"]


async def test_erasure_clears_what_the_provider_sent_but_keeps_its_key(
    engine: AsyncEngine, db: AsyncSession
) -> None:
    org = await make_org(engine)
    ctx, provider = _ctx(org), await _provider(db, org)
    made = await resolve_account(
        ctx, db, provider, POLICY, _profile("erase.me@corp.example", "Finance")
    )
    assert await erase_provider_copies(ctx, db, made.member.user.id) == 1
    await db.refresh(made.identity)
    assert made.identity.email is None
    assert made.identity.display_name is None
    assert made.identity.groups == []
    assert made.identity.subject  # the provider still finds its own record

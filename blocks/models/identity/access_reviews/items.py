"""What an access review lists, read under the organization's binding, and how a revocation is applied.

Listing reads every active owner and admin, every live API key (its owner, roles, last use, and
whether the owner is deactivated), LLM credentials, the Slack installation, identity providers,
the live SCIM token, enabled webhook destinations and live agent tokens. Revoking reuses each
domain's own function (revoke_api_key, delete_credential, update_provider, revoke_token,
update_destination, revoke_agent_token, set_roles); disconnecting Slack, which had none, deletes
the installation here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.core.identity.access_review import (
    Applied,
    ItemKind,
    ReviewItem,
    RevocationResult,
)
from blocks.core.roles import Role
from blocks.infra.db import bind_org
from blocks.models.agents.registry import list_agents
from blocks.models.agents.tokens import AgentToken, revoke_agent_token
from blocks.models.base import utcnow
from blocks.models.identity.api_keys import ApiKey, revoke_api_key
from blocks.models.identity.members import (
    Member,
    active_owner_ids,
    canonical_roles,
    get_member,
    list_members,
    lock_org,
    set_roles,
)
from blocks.models.identity.orgs import Membership, User
from blocks.models.identity.scim.tables import live_token, revoke_token
from blocks.models.identity.sso.providers import get_provider, list_providers, update_provider
from blocks.models.integrations.slack import get_installation
from blocks.models.integrations.webhooks import (
    get_destination,
    list_destinations,
    update_destination,
)
from blocks.models.llm.credentials import delete_credential, get_credential, list_credentials

_PRIVILEGED = {Role.OWNER, Role.ADMIN}


def _when(at: datetime | None, missing: str = "never") -> str:
    return at.isoformat() if at is not None else missing


def _is_admin(member: Member) -> bool:
    return member.active and bool(_PRIVILEGED & set(member.roles))


def admin_item(member: Member) -> ReviewItem:
    roles = canonical_roles(member.roles)
    return ReviewItem(
        kind=ItemKind.ADMIN,
        target_id=str(member.user.id),
        label=f"{member.user.email} as {' and '.join(r for r in roles if r in _PRIVILEGED)}",
        facts={
            "member": member.user.email,
            "roles": ",".join(roles),
            "member_since": _when(member.membership.created_at),
            "two_factor": "on" if member.user.totp_enabled_at is not None else "off",
            "managed_by": member.membership.managed_by,
        },
    )


def api_key_item(key: ApiKey, owner: User, membership: Membership) -> ReviewItem:
    deactivated = owner.deactivated_at is not None or membership.deactivated_at is not None
    flags = (
        *(("owner_deactivated",) if deactivated else ()),
        *(("never_used",) if key.last_used_at is None else ()),
    )
    return ReviewItem(
        kind=ItemKind.API_KEY,
        target_id=str(key.id),
        label=f"API key {key.name!r} of {owner.email}",
        facts={
            "owner": owner.email,
            "owner_id": str(owner.id),
            "roles": ",".join(key.roles),
            "created_at": _when(key.created_at),
            "last_used_at": _when(key.last_used_at),
            "expires_at": _when(key.expires_at),
            "owner_deactivated": "yes" if deactivated else "no",
        },
        flags=flags,
    )


async def list_review_items(ctx: OrgContext, session: AsyncSession) -> tuple[list[ReviewItem], int]:
    """(every item to review, how many active owners and admins there are)."""
    await bind_org(session, ctx.org_id)
    admins = [member for member in await list_members(ctx, session) if _is_admin(member)]
    items = [admin_item(member) for member in admins]
    now = utcnow()
    keys = await session.exec(
        select(ApiKey, User, Membership)
        .join(User, col(User.id) == ApiKey.user_id)
        .join(
            Membership,
            (col(Membership.user_id) == ApiKey.user_id) & (Membership.org_id == ApiKey.org_id),
        )
        .where(
            ApiKey.org_id == ctx.org_id,
            col(ApiKey.revoked_at).is_(None),
            (col(ApiKey.expires_at).is_(None)) | (col(ApiKey.expires_at) > now),
        )
        .order_by(col(ApiKey.created_at), col(ApiKey.id))
    )
    items += [api_key_item(key, owner, membership) for key, owner, membership in keys.all()]
    for credential in await list_credentials(ctx, session):
        items.append(
            ReviewItem(
                kind=ItemKind.LLM_CREDENTIAL,
                target_id=str(credential.id),
                label=f"LLM credential {credential.name!r} ({credential.provider})",
                facts={
                    "provider": credential.provider,
                    "base_url": credential.base_url,
                    "models": ",".join(credential.allowed_models),
                    "key_last4": credential.key_last4 or "",
                    "created_at": _when(credential.created_at),
                },
            )
        )
    installation = await get_installation(ctx, session)
    if installation is not None:
        items.append(
            ReviewItem(
                kind=ItemKind.SLACK,
                target_id=installation.team_id,
                label=f"Slack workspace {installation.team_id}",
                facts={
                    "channel": installation.channel_id,
                    "installed_at": _when(installation.created_at),
                },
            )
        )
    for provider in await list_providers(ctx, session):
        if provider.enabled:
            items.append(
                ReviewItem(
                    kind=ItemKind.IDENTITY_PROVIDER,
                    target_id=str(provider.id),
                    label=f"identity provider {provider.name!r} ({provider.protocol})",
                    facts={"protocol": provider.protocol, "created_at": _when(provider.created_at)},
                )
            )
    scim = await live_token(ctx, session)
    if scim is not None:
        items.append(
            ReviewItem(
                kind=ItemKind.SCIM_TOKEN,
                target_id=str(scim.id),
                label="the SCIM provisioning token",
                facts={
                    "created_at": _when(scim.created_at),
                    "last_used_at": _when(scim.last_used_at),
                },
                flags=("never_used",) if scim.last_used_at is None else (),
            )
        )
    for destination in await list_destinations(ctx, session):
        if destination.enabled:
            # By origin only: receivers often carry a token in the path or query.
            origin = urlsplit(destination.url)
            items.append(
                ReviewItem(
                    kind=ItemKind.WEBHOOK,
                    target_id=str(destination.id),
                    label=f"webhook destination {origin.scheme}://{origin.netloc}",
                    facts={
                        "kind": destination.kind,
                        "description": destination.description,
                        "event_types": ",".join(destination.event_types),
                        "created_at": _when(destination.created_at),
                    },
                )
            )
    items += await _agent_token_items(ctx, session)
    return items, len(admins)


async def _agent_token_items(ctx: OrgContext, session: AsyncSession) -> list[ReviewItem]:
    agents = {agent.id: agent for agent in await list_agents(ctx, session)}
    if not agents:
        return []
    now = utcnow()
    tokens = await session.exec(
        select(AgentToken)
        .where(
            AgentToken.org_id == ctx.org_id,
            col(AgentToken.agent_id).in_(list(agents)),
            col(AgentToken.revoked_at).is_(None),
            (col(AgentToken.expires_at).is_(None)) | (col(AgentToken.expires_at) > now),
        )
        .order_by(col(AgentToken.created_at), col(AgentToken.id))
    )
    return [
        ReviewItem(
            kind=ItemKind.AGENT_TOKEN,
            target_id=str(token.id),
            label=f"agent token {token.name!r} of agent {agents[token.agent_id].name!r}",
            facts={
                "agent": agents[token.agent_id].name,
                "agent_id": str(token.agent_id),
                "skills": ",".join(token.skills),
                "last_used_at": _when(token.last_used_at),
            },
            flags=("never_used",) if token.last_used_at is None else (),
        )
        for token in tokens.all()
    ]


async def apply_revocation(
    ctx: OrgContext, session: AsyncSession, item: ReviewItem
) -> RevocationResult:
    """Revoke what a reviewer rejected; what was done (nothing, when it is gone already)."""
    await bind_org(session, ctx.org_id)
    target = item.target_id
    gone = RevocationResult(Applied.ALREADY_GONE, "revoked or removed before the decision")
    done = RevocationResult(Applied.REVOKED)
    match item.kind:
        case ItemKind.ADMIN:
            return await _demote(ctx, session, uuid.UUID(target))
        case ItemKind.API_KEY:
            return done if await revoke_api_key(ctx, session, uuid.UUID(target)) else gone
        case ItemKind.LLM_CREDENTIAL:
            credential = await get_credential(ctx, session, uuid.UUID(target))
            if credential is None:
                return gone
            await delete_credential(ctx, session, credential)
            return done
        case ItemKind.SLACK:
            installation = await get_installation(ctx, session)
            if installation is None or installation.team_id != target:
                return gone
            await session.delete(installation)
            await session.flush()
            return done
        case ItemKind.IDENTITY_PROVIDER:
            return await _disable_provider(ctx, session, uuid.UUID(target))
        case ItemKind.SCIM_TOKEN:
            token = await live_token(ctx, session)
            if token is None or str(token.id) != target:
                return gone
            await revoke_token(ctx, session)
            return done
        case ItemKind.WEBHOOK:
            destination = await get_destination(ctx, session, uuid.UUID(target), for_update=True)
            if destination is None or not destination.enabled:
                return gone
            await update_destination(ctx, session, destination, enabled=False)
            return done
        case ItemKind.AGENT_TOKEN:
            agent_id = uuid.UUID(item.facts["agent_id"])
            revoked = await revoke_agent_token(ctx, session, agent_id, uuid.UUID(target))
            return done if revoked is not None else gone
    raise ValueError(f"unknown item kind {item.kind!r}")  # pragma: no cover


async def _demote(ctx: OrgContext, session: AsyncSession, user_id: uuid.UUID) -> RevocationResult:
    """Take the owner and admin roles away (other roles stay); never from the last owner."""
    await lock_org(ctx, session)  # owners are counted under the organization's lock
    member = await get_member(ctx, session, user_id)
    if member is None or not _is_admin(member):
        return RevocationResult(Applied.ALREADY_GONE, "no longer an active owner or admin")
    if member.is_owner and await active_owner_ids(ctx, session) == [user_id]:
        return RevocationResult(
            Applied.REFUSED, "the organization's last active owner keeps the role"
        )
    before = list(member.membership.roles)
    after = canonical_roles(r for r in member.roles if r not in _PRIVILEGED)
    await set_roles(ctx, session, member, after)
    return RevocationResult(Applied.REVOKED, f"roles {','.join(before)} -> {','.join(after)}")


async def _disable_provider(
    ctx: OrgContext, session: AsyncSession, provider_id: uuid.UUID
) -> RevocationResult:
    provider = await get_provider(ctx, session, provider_id)
    if provider is None or not provider.enabled:
        return RevocationResult(Applied.ALREADY_GONE, "deleted or disabled before the decision")
    org = await lock_org(ctx, session)
    enabled = [p for p in await list_providers(ctx, session) if p.enabled]
    if org.sso_enforced and [p.id for p in enabled] == [provider.id]:
        return RevocationResult(
            Applied.REFUSED, "single sign-on is enforced and this is its last enabled provider"
        )
    await update_provider(ctx, session, provider, enabled=False)
    return RevocationResult(Applied.REVOKED)

"""Agent tokens: an agent's credential, scoped to that agent and to skills its card declares.

Stored as a lookup id and a SHA-256 of the secret, as API keys (`blkagent_<lookup>_<secret>`,
256 random bits, shown once); compared in constant time. A token never reaches another agent's
tasks: the principal it resolves to names one agent and the skills it may serve. Revoking sets
`revoked_at`; the next request or message presenting the token is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.crypto.hashing import issue_token, presented_secret_matches, split_token
from blocks.infra.db import bind_org, mark_bound
from blocks.models.base import new_id, org_fk_column, text_array_column, timestamp_column, utcnow

TOKEN_PREFIX = "blkagent"  # noqa: S105 (a prefix, not a secret)


class AgentToken(SQLModel, table=True):
    __tablename__ = "agent_tokens"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    agent_id: uuid.UUID
    name: str = Field(max_length=100)
    lookup: str = Field(unique=True, max_length=32)
    secret_hash: str
    skills: list[str] = Field(sa_column=text_array_column())
    created_by: uuid.UUID | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


@dataclass(frozen=True)
class AgentPrincipal:
    """Who presents an agent token: one agent of one organization, and the skills it serves."""

    token_id: uuid.UUID
    org_id: uuid.UUID
    agent_id: uuid.UUID
    agent_name: str
    skills: frozenset[str]
    transport: str
    # Named by X-Blocks-Dev-Agent without a token (BLOCKS_AGENT_DEV_NO_AUTH): its audit events
    # say so. token_id is then not a token's, only a stable id for the rate limiter.
    dev_mode: bool = False

    def audit_marks(self) -> dict[str, bool]:
        """What its audit events add: `{"dev_mode": True}` for an agent without a token."""
        return {"dev_mode": True} if self.dev_mode else {}

    def context(self) -> OrgContext:
        """The organization context the agent's requests act in (no member, no role)."""
        return OrgContext(
            org_id=OrgId(self.org_id),
            user_id=None,
            roles=(),
            auth=AuthMethod.AGENT,
            credential_id=self.token_id,
        )


async def issue_agent_token(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    agent_id: uuid.UUID,
    name: str,
    skills: list[str],
    expires_at: datetime | None = None,
) -> tuple[AgentToken, str]:
    """The row and the plaintext token, which is never stored and cannot be shown again."""
    await bind_org(session, ctx.org_id)
    issued = issue_token(TOKEN_PREFIX)
    token = AgentToken(
        org_id=ctx.org_id,
        agent_id=agent_id,
        name=name,
        lookup=issued.lookup,
        secret_hash=issued.secret_hash,
        skills=sorted(set(skills)),
        created_by=ctx.user_id,
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    return token, issued.plaintext


async def revoke_agent_token(
    ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID, token_id: uuid.UUID
) -> AgentToken | None:
    """Revoke one token of the agent; the row if it was live (None: unknown or revoked)."""
    await bind_org(session, ctx.org_id)
    statement = select(AgentToken).where(
        AgentToken.org_id == ctx.org_id,
        AgentToken.agent_id == agent_id,
        AgentToken.id == token_id,
        col(AgentToken.revoked_at).is_(None),
    )
    token = (await session.exec(statement)).first()
    if token is None:
        return None
    token.revoked_at = utcnow()
    session.add(token)
    await session.flush()
    await notify_revoked(session, agent_id, str(token.id))
    return token


_RESOLVE = text("SELECT * FROM blocks_resolve_agent_token(:lookup)")
# The relays' channel (models.agents.tasks.NOTIFY_CHANNEL): a revocation closes the token's open
# connections at commit, not at their next check.
_NOTIFY = text("SELECT pg_notify('blocks_agent_tasks', :payload)")


async def notify_revoked(session: AsyncSession, agent_id: uuid.UUID, token: str) -> None:
    """Tell the relays (at commit) that `token` (an id, or `*`: every token) of the agent is
    revoked."""
    await session.exec(_NOTIFY.bindparams(payload=f"{agent_id}:revoked:{token}"))  # type: ignore[call-overload]


@dataclass(frozen=True)
class RefusedAgentToken:
    """A token whose secret matched but which no longer works: whose it is, and why not (so the
    refusal is audited in the token's organization)."""

    token_id: uuid.UUID
    org_id: uuid.UUID
    agent_id: uuid.UUID
    reason: str

    def context(self) -> OrgContext:
        return OrgContext(
            org_id=OrgId(self.org_id),
            user_id=None,
            roles=(),
            auth=AuthMethod.AGENT,
            credential_id=self.token_id,
        )


async def check_agent_token(
    session: AsyncSession, token: str
) -> AgentPrincipal | RefusedAgentToken | None:
    """The pre-tenant lookup: a live token of a live agent becomes its principal, and the
    session is bound to the token's organization; a genuine token that was revoked, has expired
    or whose agent was deleted is a RefusedAgentToken; anything else None (one constant-time
    comparison whatever the miss)."""
    parts = split_token(token, TOKEN_PREFIX)
    row = None
    if parts is not None:
        row = (await session.exec(_RESOLVE.bindparams(lookup=parts[0]))).first()  # type: ignore[call-overload]
    secret = parts[1] if parts else None
    if not presented_secret_matches(secret, row.secret_hash if row else None) or row is None:
        return None
    reason = None
    if row.revoked_at is not None:
        reason = "agent token revoked"
    elif row.agent_deleted_at is not None:
        reason = "agent deleted"
    elif row.expires_at is not None and row.expires_at <= utcnow():
        reason = "agent token expired"
    if reason is not None:
        return RefusedAgentToken(row.token_id, row.org_id, row.agent_id, reason)
    mark_bound(session, row.org_id)
    return AgentPrincipal(
        token_id=row.token_id,
        org_id=row.org_id,
        agent_id=row.agent_id,
        agent_name=row.agent_name,
        skills=frozenset(row.skills),
        transport=row.transport,
    )


async def resolve_agent_token(session: AsyncSession, token: str) -> AgentPrincipal | None:
    """The principal of a live token (see check_agent_token), else None."""
    checked = await check_agent_token(session, token)
    return checked if isinstance(checked, AgentPrincipal) else None


async def list_agent_tokens(
    ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID
) -> list[AgentToken]:
    """The agent's tokens, revoked ones too, newest first (rows hold no secret, only its hash)."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(AgentToken)
        .where(AgentToken.org_id == ctx.org_id, AgentToken.agent_id == agent_id)
        .order_by(col(AgentToken.created_at).desc(), col(AgentToken.id))
    )
    return list((await session.exec(statement)).all())


async def get_agent_token(
    ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID, token_id: uuid.UUID
) -> AgentToken | None:
    await bind_org(session, ctx.org_id)
    statement = select(AgentToken).where(
        AgentToken.org_id == ctx.org_id,
        AgentToken.agent_id == agent_id,
        AgentToken.id == token_id,
    )
    return (await session.exec(statement)).first()


async def revoke_agent_tokens(
    ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID
) -> list[AgentToken]:
    """Revoke every live token of the agent (it is being deleted); the rows revoked."""
    await bind_org(session, ctx.org_id)
    statement = select(AgentToken).where(
        AgentToken.org_id == ctx.org_id,
        AgentToken.agent_id == agent_id,
        col(AgentToken.revoked_at).is_(None),
    )
    tokens = list((await session.exec(statement)).all())
    now = utcnow()
    for token in tokens:
        token.revoked_at = now
        session.add(token)
    await session.flush()
    await notify_revoked(session, agent_id, "*")
    return tokens


async def mark_token_used(ctx: OrgContext, session: AsyncSession, token_id: uuid.UUID) -> None:
    """The token opened a session just now."""
    await bind_org(session, ctx.org_id)
    await session.exec(  # type: ignore[call-overload]
        text(
            "UPDATE agent_tokens SET last_used_at = now() WHERE org_id = :org_id AND id = :token_id"
        ).bindparams(org_id=ctx.org_id, token_id=token_id)
    )

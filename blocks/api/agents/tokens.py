"""Routes of agent tokens: issue, list, revoke and rotate the credentials an agent connects with.

A token is scoped to one agent and to skills its card declares (by default all of them; a skill
the card does not declare is a 422 naming it). The plaintext `blkagent_...` is answered once, at
issue or rotation, and stored only as a hash. Revoking cuts the agent off at its next request or
message. Rotating issues a new token of the same name, skills and expiry and revokes the old one
in the same transaction; for a change without a gap, issue a second token, move the agent to it,
then revoke the first. Everything here needs `integration:manage` and each issue and revocation
is audited (`agent.token_issued`, `agent.token_revoked`: names, skills and ids, never a secret).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StringConstraints

from blocks.api.agents.registry import AGENT_ID, agent_or_404
from blocks.api.deps import CanManageIntegrations, DbSession, record_change
from blocks.api.errors import Problem, invalid_field, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.agents.cards import skill_ids
from blocks.core.context import OrgContext
from blocks.models.agents.registry import Agent
from blocks.models.agents.tokens import (
    AgentToken,
    get_agent_token,
    issue_agent_token,
    list_agent_tokens,
    revoke_agent_token,
)
from blocks.models.base import utcnow

router = APIRouter(prefix="/v1/agents/{agent_id}/tokens", tags=["integrations"])

TOKEN_ID = "d4c3b2a1-9e8f-4a7b-8c6d-5e4f3a2b1c0d"  # noqa: S105 (an id)
EXAMPLE_TOKEN = "blkagent_5f1e9a3c7b2d4e60_R2xq8WmZ4vN7cTj1Kp6Ys3Hd9Lf0Bg5Ue2Ao7Ii4Xw"  # noqa: S105
TokenName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
SkillId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class AgentTokenIn(StrictModel):
    model_config = example(name="invoice-reader on host-7", skills=["extract"], expires_at=None)

    name: TokenName = Field(description="What the token is for (where the agent runs)")
    skills: list[SkillId] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Skill ids of the agent's card the token may serve; all of them if left out",
    )
    expires_at: datetime | None = Field(default=None, description="Unset: until revoked")


class AgentTokenOut(BaseModel):
    model_config = example(
        id=TOKEN_ID,
        agent_id=AGENT_ID,
        name="invoice-reader on host-7",
        skills=["extract"],
        created_by=ex.OWNER_ID,
        created_at=ex.CREATED,
        expires_at=None,
        revoked_at=None,
        last_used_at=ex.DECIDED,
    )

    id: uuid.UUID
    agent_id: uuid.UUID
    name: str
    skills: list[str]
    created_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class AgentTokenIssuedOut(AgentTokenOut):
    model_config = example(
        **AgentTokenOut.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
        token=EXAMPLE_TOKEN,
    )

    token: str = Field(description="The token itself: shown this once, never again")


def _out(token: AgentToken) -> AgentTokenOut:
    return AgentTokenOut(
        id=token.id,
        agent_id=token.agent_id,
        name=token.name,
        skills=list(token.skills),
        created_by=token.created_by,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
    )


def _issued(token: AgentToken, plaintext: str) -> AgentTokenIssuedOut:
    return AgentTokenIssuedOut(**_out(token).model_dump(), token=plaintext)


def _metadata(token: AgentToken, **extra: Any) -> dict[str, Any]:
    return {
        "agent_id": str(token.agent_id),
        "name": token.name,
        "skills": list(token.skills),
        **extra,
    }


def _scope(agent: Agent, asked: list[str] | None) -> list[str]:
    """The skills asked for, each one the card declares (422 naming the first that is not)."""
    declared = skill_ids(agent.card)
    if asked is None:
        return declared
    for index, skill in enumerate(asked):
        if skill not in declared:
            raise invalid_field(
                f"skills[{index}]",
                f"{skill!r} is not a skill of the agent's card ({', '.join(declared)})",
            )
    return list(dict.fromkeys(asked))


async def _token_or_404(
    ctx: OrgContext, session: DbSession, agent_id: uuid.UUID, token_id: uuid.UUID
) -> AgentToken:
    token = await get_agent_token(ctx, session, agent_id, token_id)
    if token is None:
        raise not_found("agent token")
    return token


async def _record_issued(
    request: Request, ctx: OrgContext, session: DbSession, token: AgentToken, **extra: Any
) -> None:
    await record_change(
        request,
        ctx,
        session,
        "agent.token_issued",
        target_type="agent_token",
        target_id=str(token.id),
        data=_metadata(token, **extra),
    )


async def _record_revoked(
    request: Request, ctx: OrgContext, session: DbSession, token: AgentToken, reason: str
) -> None:
    await record_change(
        request,
        ctx,
        session,
        "agent.token_revoked",
        target_type="agent_token",
        target_id=str(token.id),
        data=_metadata(token, reason=reason),
    )


@router.post(
    "", status_code=201, response_model=AgentTokenIssuedOut, summary="Issue an agent token"
)
async def issue_token(
    agent_id: uuid.UUID,
    body: AgentTokenIn,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> AgentTokenIssuedOut:
    """The answer carries the token once; store it where the agent runs (`blocks agent run
    --token ...`)."""
    agent = await agent_or_404(ctx, session, agent_id)
    skills = _scope(agent, body.skills)
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise invalid_field("expires_at", "must be in the future")
    token, plaintext = await issue_agent_token(
        ctx, session, agent_id=agent.id, name=body.name, skills=skills, expires_at=body.expires_at
    )
    await _record_issued(request, ctx, session, token)
    return _issued(token, plaintext)


@router.get("", response_model=list[AgentTokenOut], summary="List an agent's tokens")
async def list_tokens(
    agent_id: uuid.UUID, ctx: CanManageIntegrations, session: DbSession
) -> list[AgentTokenOut]:
    """Newest first, revoked ones too; never a token itself."""
    agent = await agent_or_404(ctx, session, agent_id)
    return [_out(t) for t in await list_agent_tokens(ctx, session, agent.id)]


@router.delete("/{token_id}", response_model=AgentTokenOut, summary="Revoke an agent token")
async def revoke_token(
    agent_id: uuid.UUID,
    token_id: uuid.UUID,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> AgentTokenOut:
    """The agent is cut off at its next request or message. Revoking a revoked token changes
    nothing and answers it as it is."""
    agent = await agent_or_404(ctx, session, agent_id)
    token = await _token_or_404(ctx, session, agent.id, token_id)
    revoked = await revoke_agent_token(ctx, session, agent.id, token.id)
    if revoked is not None:
        await _record_revoked(request, ctx, session, revoked, "revoked")
        token = revoked
    return _out(token)


@router.post(
    "/{token_id}/rotate",
    status_code=201,
    response_model=AgentTokenIssuedOut,
    summary="Rotate an agent token",
)
async def rotate_token(
    agent_id: uuid.UUID,
    token_id: uuid.UUID,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> AgentTokenIssuedOut:
    """A new token with the old one's name, skills (those the card still declares; 409 if none
    is left) and expiry (none if it had passed); the old one is revoked at once (a revoked token
    is a 404 here)."""
    agent = await agent_or_404(ctx, session, agent_id)
    old = await _token_or_404(ctx, session, agent.id, token_id)
    if old.revoked_at is not None:
        raise not_found("agent token")
    declared = set(skill_ids(agent.card))
    skills = [s for s in old.skills if s in declared]
    if not skills:
        raise Problem(
            409,
            "Conflict",
            "the agent's card no longer declares any skill of this token: issue a new one",
            code="token_scope_gone",
        )
    live = old.expires_at is not None and old.expires_at > utcnow()
    token, plaintext = await issue_agent_token(
        ctx,
        session,
        agent_id=agent.id,
        name=old.name,
        skills=skills,
        expires_at=old.expires_at if live else None,
    )
    revoked = await revoke_agent_token(ctx, session, agent.id, old.id)
    await _record_issued(request, ctx, session, token, rotated_from=str(old.id))
    if revoked is not None:
        await _record_revoked(request, ctx, session, revoked, "rotated")
    return _issued(token, plaintext)

"""Slack installations (workspace, channel, sealed bot token) and Slack users linked to members.

A link is made only with the member's own proof (`slack_link_codes`: a code the member starts
signed in and sends from Slack), and records when it was confirmed. Links made before that proof
was required (by an admin, for anyone) have no `confirmed_at` and decide nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Field, SQLModel, col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext, OrgId
from blocks.infra.crypto.field_crypto import MasterKeys, current_master_keys
from blocks.infra.db import bind_org, mark_bound
from blocks.models.base import org_fk_column, timestamp_column, user_fk_column, utcnow
from blocks.models.identity.orgs import Membership, User


class SlackInstallation(SQLModel, table=True):
    """One per organization. The bot token is sealed under the master keys, never stored plain."""

    __tablename__ = "slack_installations"

    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False, primary_key=True))
    team_id: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    channel_id: str = Field(max_length=32)
    bot_token_key_id: str = Field(max_length=64)
    bot_token_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)
    installed_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class SlackUserLink(SQLModel, table=True):
    __tablename__ = "slack_user_links"

    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False, primary_key=True))
    slack_user_id: str = Field(primary_key=True, max_length=32)
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    # When the member proved the link from Slack; None for a link made without their proof.
    confirmed_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


def _token_binding(org_id: uuid.UUID, team_id: str) -> str:
    # The sealed token opens only as the token of this organization's installation of this team.
    return f"slack-bot-token|{org_id}|{team_id}"


async def reseal_bot_tokens(session: AsyncSession, org_id: uuid.UUID, master: MasterKeys) -> int:
    """Seal the organization's bot token again under the active master key (`blocks keys rotate`);
    how many were resealed."""
    await bind_org(session, org_id)
    statement = (
        select(SlackInstallation)
        .where(SlackInstallation.org_id == org_id)
        .where(SlackInstallation.bot_token_key_id != master.active_id)
        .with_for_update()
    )
    resealed = 0
    for installation in (await session.exec(statement)).all():
        key_id, sealed = master.reseal_secret(
            installation.bot_token_key_id,
            _token_binding(org_id, installation.team_id),
            installation.bot_token_sealed,
        )
        installation.bot_token_key_id, installation.bot_token_sealed = key_id, sealed
        session.add(installation)
        resealed += 1
    return resealed


def bot_token(installation: SlackInstallation) -> str:
    """The installation's bot token, unsealed for one API call; never logged or returned."""
    return current_master_keys().open_secret(
        installation.bot_token_key_id,
        _token_binding(installation.org_id, installation.team_id),
        installation.bot_token_sealed,
    )


async def get_installation(ctx: OrgContext, session: AsyncSession) -> SlackInstallation | None:
    await bind_org(session, ctx.org_id)
    statement = select(SlackInstallation).where(SlackInstallation.org_id == ctx.org_id)
    return (await session.exec(statement)).first()


async def save_installation(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    team_id: str,
    channel_id: str,
    token: str,
) -> SlackInstallation:
    """Install Slack for the organization, or replace its installation (team, channel, token).

    Raises IntegrityError (constraint `slack_installations_team_id_key`) when another
    organization has installed the same team.
    """
    await bind_org(session, ctx.org_id)
    key_id, sealed = current_master_keys().seal_secret(_token_binding(ctx.org_id, team_id), token)
    now = utcnow()
    values = {
        "team_id": team_id,
        "channel_id": channel_id,
        "bot_token_key_id": key_id,
        "bot_token_sealed": sealed,
        "installed_by": ctx.user_id,
        "updated_at": now,
    }
    statement = (
        insert(SlackInstallation)
        .values(org_id=ctx.org_id, created_at=now, **values)
        .on_conflict_do_update(index_elements=["org_id"], set_=values)
    )
    await session.exec(statement)  # type: ignore[call-overload]
    installation = await get_installation(ctx, session)
    if installation is None:  # the row was just written in this transaction
        raise RuntimeError("the Slack installation vanished after it was saved")
    await session.refresh(installation)
    return installation


async def set_channel(
    ctx: OrgContext, session: AsyncSession, installation: SlackInstallation, channel_id: str
) -> SlackInstallation:
    """Move the approvals to another channel, keeping the stored token."""
    await bind_org(session, ctx.org_id)
    installation.channel_id = channel_id
    installation.updated_at = utcnow()
    session.add(installation)
    await session.flush()
    return installation


_RESOLVE_TEAM = text("SELECT blocks_resolve_slack_team(:team_id)")


async def org_for_slack_team(session: AsyncSession, team_id: str) -> OrgId | None:
    """The pre-tenant lookup of a Slack interaction: which organization installed this team.

    Binds the session's transaction to that organization (row-level security then shows its
    rows only), so call it on a session that serves no organization yet.
    """
    row = (await session.exec(_RESOLVE_TEAM.bindparams(team_id=team_id))).first()  # type: ignore[call-overload]
    if row is None or row[0] is None:
        return None
    mark_bound(session, row[0])
    return OrgId(row[0])


@dataclass(frozen=True)
class ConfirmedLink:
    link: SlackUserLink
    previous_user_id: uuid.UUID | None  # the member this Slack user was linked to before, if any


async def link_slack_user(
    ctx: OrgContext, session: AsyncSession, *, slack_user_id: str
) -> ConfirmedLink:
    """Link a Slack user to the context's member, as confirmed now (replacing an earlier link
    of that Slack user). Call it only with the member's proof: the code they started, sent from
    this Slack user (see `slack_link_codes.redeem_link_code`)."""
    await bind_org(session, ctx.org_id)
    if ctx.user_id is None:
        raise ValueError("a Slack user is linked to a member, and this context names none")
    earlier = await _link(ctx, session, slack_user_id)
    previous = earlier.user_id if earlier is not None else None
    now = utcnow()
    statement = (
        insert(SlackUserLink)
        .values(
            org_id=ctx.org_id,
            slack_user_id=slack_user_id,
            user_id=ctx.user_id,
            created_at=now,
            confirmed_at=now,
        )
        .on_conflict_do_update(
            index_elements=["org_id", "slack_user_id"],
            set_={"user_id": ctx.user_id, "created_at": now, "confirmed_at": now},
        )
    )
    await session.exec(statement)  # type: ignore[call-overload]
    link = await _link(ctx, session, slack_user_id)
    if link is None:
        raise RuntimeError("the Slack user link vanished after it was saved")
    await session.refresh(link)
    return ConfirmedLink(link=link, previous_user_id=previous)


async def unlink_slack_user(
    ctx: OrgContext, session: AsyncSession, slack_user_id: str
) -> uuid.UUID | None:
    """Remove a Slack user's link: the member it was linked to, or None if it was not."""
    await bind_org(session, ctx.org_id)
    statement = (
        delete(SlackUserLink)
        .where(
            col(SlackUserLink.org_id) == ctx.org_id,
            col(SlackUserLink.slack_user_id) == slack_user_id,
        )
        .returning(col(SlackUserLink.user_id))
    )
    result = await session.exec(statement)  # type: ignore[call-overload]
    row = result.first()
    return row[0] if row is not None else None


async def _link(ctx: OrgContext, session: AsyncSession, slack_user_id: str) -> SlackUserLink | None:
    statement = select(SlackUserLink).where(
        SlackUserLink.org_id == ctx.org_id, SlackUserLink.slack_user_id == slack_user_id
    )
    return (await session.exec(statement)).first()


@dataclass(frozen=True)
class SlackMember:
    """Who a linked Slack user is in the organization today."""

    user_id: uuid.UUID
    email: str
    roles: tuple[str, ...] | None  # None: no longer a member
    deactivated: bool
    confirmed: bool  # False: linked without the member's proof, so it decides nothing


async def member_for_slack_user(
    ctx: OrgContext, session: AsyncSession, slack_user_id: str
) -> SlackMember | None:
    """The member a Slack user is linked to, with their current roles; None if not linked."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(
            SlackUserLink.user_id,
            User.email,
            User.deactivated_at,
            Membership.roles,
            SlackUserLink.confirmed_at,
        )
        .join(User, col(User.id) == SlackUserLink.user_id)
        .outerjoin(
            Membership,
            (col(Membership.org_id) == SlackUserLink.org_id)
            & (col(Membership.user_id) == SlackUserLink.user_id)
            & col(Membership.deactivated_at).is_(None),
        )
        .where(SlackUserLink.org_id == ctx.org_id, SlackUserLink.slack_user_id == slack_user_id)
    )
    row = (await session.exec(statement)).first()
    if row is None:
        return None
    user_id, email, deactivated_at, roles, confirmed_at = row
    return SlackMember(
        user_id=user_id,
        email=email,
        roles=tuple(roles) if roles is not None else None,
        deactivated=deactivated_at is not None,
        confirmed=confirmed_at is not None,
    )


async def slack_users_of(
    ctx: OrgContext, session: AsyncSession, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The Slack user linked (with the member's proof) to each of these members (one of them,
    if several are)."""
    await bind_org(session, ctx.org_id)
    wanted = list(user_ids)
    if not wanted:
        return {}
    statement = (
        select(SlackUserLink.user_id, SlackUserLink.slack_user_id)
        .where(
            SlackUserLink.org_id == ctx.org_id,
            col(SlackUserLink.user_id).in_(wanted),
            col(SlackUserLink.confirmed_at).is_not(None),
        )
        .order_by(col(SlackUserLink.created_at))
    )
    return {user_id: slack_id for user_id, slack_id in (await session.exec(statement)).all()}

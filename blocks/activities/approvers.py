"""The approver check a step makes when it opens: which of the members it names still count.

A member named by id when the run started may have been deactivated, or lost every role that
lets them decide, by the time their step opens. `ApproverActivities` asks a `MemberDirectory`;
a worker serves it from PostgreSQL (`PostgresMemberDirectory`), a test kit may serve it from
memory (any object with the same `still_count` method).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from blocks.core.approvals.named_approvers import member_uuid
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Permission, has_permission
from blocks.models.identity.members import members_by_ids

CHECK_MEMBERS = "blocks.approvers.check"


@dataclass(frozen=True)
class MemberCheck:
    """The members a step's policy names, in the run's organization."""

    org_id: str
    user_ids: list[str] = field(default_factory=list)


class MemberDirectory(Protocol):
    """Who of an organization's members may decide steps now."""

    async def still_count(self, org_id: str, user_ids: Sequence[str]) -> list[str]:
        """The ids among `user_ids`, in their order, of active members of the organization whose
        roles grant `step:decide`; anyone else (deactivated, removed, unknown, another
        organization's person, an id not in canonical form) is left out."""
        ...


class PostgresMemberDirectory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def still_count(self, org_id: str, user_ids: Sequence[str]) -> list[str]:
        ids = {value: parsed for value in user_ids if (parsed := member_uuid(value)) is not None}
        if not ids:
            return []
        # The organization is the run's own, which the API resolved when it started the run.
        ctx = OrgContext(
            org_id=OrgId(uuid.UUID(org_id)), user_id=None, roles=(), auth=AuthMethod.WORKFLOW
        )
        async with self._sessions() as session, session.begin():
            members = await members_by_ids(ctx, session, list(set(ids.values())))
        counting = []
        for value in user_ids:
            member = members.get(ids[value]) if value in ids else None
            if (
                member is not None
                and member.active
                and has_permission(member.roles, Permission.STEP_DECIDE)
            ):
                counting.append(value)
        return counting


class ApproverActivities:
    def __init__(self, directory: MemberDirectory) -> None:
        self._directory = directory

    @activity.defn(name=CHECK_MEMBERS)
    async def check_members(self, check: MemberCheck) -> list[str]:
        """The named members who still count (see `MemberDirectory.still_count`)."""
        return await self._directory.still_count(check.org_id, check.user_ids)

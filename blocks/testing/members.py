"""The kit's members: who exists, with which roles and groups, and the checks the server makes.

`KitMembers` stands in for the organization's membership: it answers the step's approver check
(`blocks.approvers.check`, the `MemberDirectory` protocol) and checks the approvers a start's
input names, as the API does against PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from blocks.core.approvals.named_approvers import (
    Standing,
    approver_refusal,
    member_uuid,
    named_approvers,
)
from blocks.core.roles import Permission, Role, has_permission, parse_roles


@dataclass(frozen=True)
class KitMember:
    """A member of the kit's organization, as the API would resolve them from their key."""

    id: str
    name: str
    roles: tuple[str, ...]
    groups: tuple[str, ...] = ()
    active: bool = True

    def can(self, permission: Permission) -> bool:
        return self.active and has_permission(parse_roles(self.roles), permission)


class KitMembers:
    """The members of one organization (`org_id`), kept in memory."""

    def __init__(self, org_id: str) -> None:
        self.org_id = org_id
        self._by_name: dict[str, KitMember] = {}
        self._by_id: dict[str, KitMember] = {}

    def add(self, name: str, roles: Sequence[str], groups: Sequence[str]) -> KitMember:
        """A new member; the same name again returns the member it made."""
        known = self._by_name.get(name)
        if known is not None:
            return known
        try:
            parse_roles(roles)
        except ValueError:
            valid = ", ".join(r.value for r in Role)
            raise ValueError(f"member {name!r}: roles are among {valid}, got {roles!r}") from None
        member = KitMember(str(uuid.uuid4()), name, tuple(roles), tuple(groups))
        self._by_name[name] = self._by_id[member.id] = member
        return member

    def deactivate(self, member: KitMember) -> KitMember:
        gone = replace(self._by_id[member.id], active=False)
        self._by_name[gone.name] = self._by_id[gone.id] = gone
        return gone

    def current(self, member: KitMember) -> KitMember:
        """The member as they are now (a test may hold a copy from before a deactivation)."""
        return self._by_id.get(member.id, member)

    async def still_count(self, org_id: str, user_ids: Sequence[str]) -> list[str]:
        """`MemberDirectory.still_count`: the ids of active members allowed to decide, in order."""
        if org_id != self.org_id:
            return []
        return [u for u in user_ids if (m := self._by_id.get(u)) and m.can(Permission.STEP_DECIDE)]

    def approver_errors(
        self, schema: dict[str, Any], params: dict[str, Any], requester: str | None
    ) -> list[dict[str, str]]:
        """What the API says of the approvers `params` names (`invalid_approver`, per field)."""
        errors = []
        for named in named_approvers(schema, params):
            member = self._by_id.get(named.value)
            standing = (
                Standing(member.active, parse_roles(member.roles), member.groups)
                if member is not None
                else None
            )
            reason = approver_refusal(
                named, member_uuid(requester) if requester else None, standing
            )
            if reason is not None:
                errors.append({"field": named.field, "reason": reason})
        return errors

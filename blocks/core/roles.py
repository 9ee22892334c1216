"""Roles, permissions and the table that joins them: the one place access rules are decided."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    OPERATOR = "operator"
    APPROVER = "approver"
    AUDITOR = "auditor"


class Permission(StrEnum):
    RUN_START = "run:start"
    RUN_READ = "run:read"
    STEP_DECIDE = "step:decide"
    AUDIT_READ = "audit:read"
    ORG_READ = "org:read"
    MEMBER_MANAGE = "member:manage"
    API_KEY_MANAGE = "api_key:manage"
    # Destroys a member's audit data key: irreversible, so owners and admins only (they hold all).
    PRIVACY_ERASE = "privacy:erase"
    # Connects chat workspaces and maps their users to members: owners and admins (they hold all).
    INTEGRATION_MANAGE = "integration:manage"


_ALL = frozenset(Permission)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: _ALL,
    Role.ADMIN: _ALL,
    Role.OPERATOR: frozenset({Permission.RUN_START, Permission.RUN_READ, Permission.ORG_READ}),
    # Approvers see the runs they act on; which step they may decide is the workflow's call.
    Role.APPROVER: frozenset({Permission.RUN_READ, Permission.STEP_DECIDE, Permission.ORG_READ}),
    Role.AUDITOR: frozenset({Permission.AUDIT_READ, Permission.RUN_READ, Permission.ORG_READ}),
}


def permissions_for(roles: Iterable[Role]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS[role]
    return frozenset(granted)


def has_permission(roles: Iterable[Role], permission: Permission) -> bool:
    return permission in permissions_for(roles)


def parse_roles(values: Iterable[str]) -> tuple[Role, ...]:
    """Turn stored role names into roles, refusing unknown names rather than ignoring them."""
    return tuple(Role(value) for value in values)

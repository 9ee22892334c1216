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
    # Sign the audit chain's head now (a write to the log, beside the scheduled checkpoints):
    # owners and admins (they hold all); auditors read, they do not write.
    AUDIT_CHECKPOINT = "audit:checkpoint"
    ORG_READ = "org:read"
    MEMBER_MANAGE = "member:manage"
    API_KEY_MANAGE = "api_key:manage"
    # Destroys a member's audit data key: irreversible, so owners and admins only (they hold all).
    PRIVACY_ERASE = "privacy:erase"
    # Connects chat workspaces and maps their users to members: owners and admins (they hold all).
    INTEGRATION_MANAGE = "integration:manage"
    # Organization security: required two-factor, decision-link policy, members' sessions.
    ORG_SECURITY = "org:security"
    # Create, list and revoke one's own API keys (never with more roles than one holds).
    API_KEY_OWN = "api_key:own"
    # Transfer ownership, close the organization: owners only, each behind a confirmation.
    ORG_OWN = "org:own"
    # Cancel a running workflow (its open steps close as cancelled): operators and admins.
    RUN_CANCEL = "run:cancel"
    # Restrict which published workflows the organization may start: owners and admins.
    WORKFLOW_MANAGE = "workflow:manage"
    # Decode a run's Temporal payloads through the codec endpoint (the Temporal UI): whoever
    # reads runs in full, not approvers (they see the steps they act on, not the raw history).
    RUN_DECODE = "run:decode"


_ALL = frozenset(Permission)
_EVERY_MEMBER = frozenset({Permission.ORG_READ, Permission.API_KEY_OWN})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: _ALL,
    Role.ADMIN: _ALL - {Permission.ORG_OWN},
    Role.OPERATOR: _EVERY_MEMBER
    | {Permission.RUN_START, Permission.RUN_READ, Permission.RUN_CANCEL, Permission.RUN_DECODE},
    # Approvers see the runs they act on; which step they may decide is the workflow's call.
    Role.APPROVER: _EVERY_MEMBER | {Permission.RUN_READ, Permission.STEP_DECIDE},
    Role.AUDITOR: _EVERY_MEMBER
    | {Permission.AUDIT_READ, Permission.RUN_READ, Permission.RUN_DECODE},
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

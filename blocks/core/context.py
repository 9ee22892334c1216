"""The resolved identity of a request or activity: which organization, who, and with what roles."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import NewType

from blocks.core.roles import Permission, Role, has_permission

# Only the context resolver (API auth, or a workflow's own recorded org) makes an OrgId, so a
# data-access function that takes an OrgContext cannot be handed an organization by accident.
OrgId = NewType("OrgId", uuid.UUID)

# The reserved organization whose audit chain holds what happens before anyone picks an
# organization: sign-ups, sign-in attempts, resets, refused anonymous requests. No members.
PLATFORM_ORG = OrgId(uuid.UUID(int=0))


class AuthMethod(StrEnum):
    API_KEY = "api_key"
    SESSION = "session"
    SLACK = "slack"  # a signed Slack interaction from a Slack user linked to the member
    LINK = "link"  # a single-use decision link sent to the member by email
    WORKFLOW = "workflow"
    SYSTEM = "system"
    AGENT = "agent"  # a remote agent's token: one agent's tasks, no member, no role
    SCIM = "scim"  # an organization's SCIM token: its identity provider provisioning members


@dataclass(frozen=True, slots=True)
class OrgContext:
    org_id: OrgId
    user_id: uuid.UUID | None
    roles: tuple[Role, ...]
    auth: AuthMethod
    actor_email: str | None = None
    credential_id: uuid.UUID | None = None

    def can(self, permission: Permission) -> bool:
        return has_permission(self.roles, permission)

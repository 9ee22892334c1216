"""Console pages for admins: members and roles, invites, groups, API keys, security settings, integrations, sessions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from blocks.api.console.admin import groups, invites, keys, members, security, sessions
from blocks.api.console.admin.common import ADMIN
from blocks.api.console.errors import CONSOLE_PREFIX
from blocks.api.console.pages import render
from blocks.api.deps import OrgCtx
from blocks.core.roles import Permission

router = APIRouter()
for _module in (members, invites, groups, keys, security, sessions):
    router.include_router(_module.router)

# The sections and the permission whose pages each opens; the pages refuse on their own
# (their dependencies are the API's), this only leaves out links that would lead to a 403.
SECTIONS: tuple[tuple[str, str, str, Permission | None], ...] = (
    (
        "Members and roles",
        f"{CONSOLE_PREFIX}{ADMIN}/members",
        "Who is in, their roles and status",
        Permission.MEMBER_MANAGE,
    ),
    (
        "Invites",
        f"{CONSOLE_PREFIX}{ADMIN}/invites",
        "Invite people by email; pending invites",
        Permission.MEMBER_MANAGE,
    ),
    (
        "Groups",
        f"{CONSOLE_PREFIX}{ADMIN}/groups",
        "Sets of members approval steps can require",
        Permission.MEMBER_MANAGE,
    ),
    (
        "API keys",
        f"{CONSOLE_PREFIX}{ADMIN}/api-keys",
        "Keys for scripts and services, shown once",
        Permission.API_KEY_OWN,
    ),
    (
        "Security",
        f"{CONSOLE_PREFIX}{ADMIN}/security",
        "Two-factor requirement, decision links, approvers",
        Permission.ORG_SECURITY,
    ),
    (
        "Integrations",
        f"{CONSOLE_PREFIX}{ADMIN}/integrations",
        "Slack, LLM credentials, identity providers",
        Permission.INTEGRATION_MANAGE,
    ),
    ("Sessions", f"{CONSOLE_PREFIX}{ADMIN}/sessions", "Where you are signed in", None),
)


@router.get(ADMIN)
async def admin_index(request: Request, ctx: OrgCtx) -> HTMLResponse:
    """The sections this person's roles open (every member has their own keys and sessions)."""
    sections = [
        (label, href, about)
        for label, href, about, permission in SECTIONS
        if permission is None or ctx.can(permission)
    ]
    return render(request, "admin_index.html", ctx=ctx, sections=sections)

"""Rendering console pages: the Jinja2 environment (autoescaped), the page context every template
gets (who is signed in, what they may open) and the HTML response with the console's headers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from blocks.core.context import OrgContext
from blocks.core.roles import Permission
from blocks.infra.content.rich_text import sanitize

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Autoescaped everywhere: a value reaches the HTML as text unless a template marks it with
# `|rich` (sanitized rich text); StrictUndefined makes a misspelt name an error, not a blank.
environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def rich(text: str | None) -> Markup:
    """Rich text (a comment, a step's description) sanitized again as it is shown: what was
    stored before the allow-list changed, or reached the database another way, is still inert."""
    return Markup(sanitize(text or ""))  # noqa: S704 - sanitized by nh3 just above


environment.filters["rich"] = rich

# The sections of the navigation and the permission each needs; a section the roles do not
# open is not shown (its pages still refuse on their own: the permission table decides).
NAVIGATION: tuple[tuple[str, str, Permission], ...] = (
    ("Inbox", "/console/inbox", Permission.STEP_DECIDE),
    ("Runs", "/console/runs", Permission.RUN_READ),
    ("Audit", "/console/audit", Permission.AUDIT_READ),
    ("Admin", "/console/admin", Permission.MEMBER_MANAGE),
)


def navigation(ctx: OrgContext | None) -> list[tuple[str, str]]:
    if ctx is None:
        return []
    return [(label, href) for label, href, permission in NAVIGATION if ctx.can(permission)]


def render(
    request: Request,
    template: str,
    *,
    ctx: OrgContext | None = None,
    status: int = 200,
    notice: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """`template` rendered with `context`, plus what the layout needs (`ctx`, the navigation,
    the current path for the active link, `now` for times left, a `notice` of what was done)."""
    document = environment.get_template(template).render(
        ctx=ctx,
        notice=notice,
        navigation=navigation(ctx),
        path=request.url.path,
        now=datetime.now(UTC),
        **context,
    )
    # The app's SecurityHeaders add the strict CSP (self only, no inline script or style),
    # nosniff, no framing and no-store to this answer like to every other.
    response = HTMLResponse(document, status_code=status)
    # Not the site-wide no-referrer: under it a browser sends `Origin: null` with a page's form
    # POST, which the origin check refuses. same-origin still tells other sites nothing.
    response.headers["referrer-policy"] = "same-origin"
    return response


def redirect(location: str) -> RedirectResponse:
    """After a form: 303, so the browser GETs the next page (reloading it resubmits nothing)."""
    return RedirectResponse(location, status_code=303)

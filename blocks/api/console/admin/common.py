"""What the admin console pages share: repeated form fields, undoing a refused change, fixed
notices after a redirect."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.console.errors import CONSOLE_PREFIX
from blocks.api.console.forms import FormErrors, from_problem
from blocks.api.console.pages import redirect
from blocks.api.errors import Problem
from blocks.core.roles import Role

# Route paths are relative to /console (the console router's prefix); links and redirects are not.
ADMIN = "/admin"
ROLE_NAMES: tuple[str, ...] = tuple(role.value for role in Role)


async def form_list(request: Request, name: str) -> list[str]:
    """Every value of a repeated field (checkboxes of one name), text only."""
    form = await request.form()
    return [value for value in form.getlist(name) if isinstance(value, str)]


async def refused(session: AsyncSession, problem: Problem) -> FormErrors:
    """The API's message for a refused change, after undoing whatever the route had begun:
    the page is shown again in a clean transaction (a denial was audited in its own)."""
    await session.rollback()
    return from_problem(problem)


def notice(request: Request, notices: Mapping[str, str]) -> str | None:
    """The fixed message for `?done=<key>`: a key only selects, query text is never shown."""
    return notices.get(request.query_params.get("done", ""))


def as_bool(value: str | None) -> bool | str | None:
    """A yes/no radio as the API's strict boolean; anything else is passed on as given, for
    the API's own validation to refuse (a mistake is pointed out, never guessed at)."""
    return {"true": True, "false": False}.get(value or "", value)


def back_to(path: str, done: str, **query: str) -> RedirectResponse:
    """303 to a console page after a change, with the key of its fixed notice."""
    return redirect(f"{CONSOLE_PREFIX}{path}?{urlencode(query | {'done': done})}")

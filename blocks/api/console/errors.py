"""How a refusal looks on a console page: a request that needs a sign-in goes to the sign-in page
(and back afterwards), one that needs an organization to the picker, one still owing its second
factor to that step; any other Problem is a page with the API's own message and status."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from blocks.api.console.pages import render
from blocks.api.errors import Problem

CONSOLE_PREFIX = "/console"


def is_console(request: Request) -> bool:
    path = request.url.path
    return (
        path == CONSOLE_PREFIX or path.startswith(f"{CONSOLE_PREFIX}/")
    ) and not path.startswith(f"{CONSOLE_PREFIX}/static/")


def _back_to(request: Request) -> str:
    # Only a path of this console: `next` is never an absolute URL (no open redirect).
    target = request.url.path if request.method == "GET" else f"{CONSOLE_PREFIX}/inbox"
    return quote(target, safe="/")


def console_problem(request: Request, problem: Problem) -> HTMLResponse | RedirectResponse:
    if problem.status == 401:
        step = "two-factor" if problem.code == "mfa_required" else "sign-in"
        return RedirectResponse(f"{CONSOLE_PREFIX}/{step}?next={_back_to(request)}", 303)
    if problem.code == "organization_not_selected":
        return RedirectResponse(f"{CONSOLE_PREFIX}/orgs?next={_back_to(request)}", 303)
    response = render(request, "error.html", status=problem.status, problem=problem)
    for name, value in (problem.headers or {}).items():
        if name.lower() != "www-authenticate":
            response.headers[name] = value
    return response

"""The console's wiring: its page routers under /console (kept out of the OpenAPI document: they
answer HTML and call the JSON API's own route functions), and its static files."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from blocks.api.console.admin import pages as admin_pages
from blocks.api.console.audit import pages as audit_pages
from blocks.api.console.errors import CONSOLE_PREFIX
from blocks.api.console.pages import STATIC, redirect
from blocks.api.console.runs import inbox as inbox_pages
from blocks.api.console.runs import pages as run_pages
from blocks.api.console.runs import steps as step_pages
from blocks.api.console.sign_in import pages as sign_in_pages


async def console_home() -> RedirectResponse:
    return redirect(f"{CONSOLE_PREFIX}/inbox")


def install_console(app: FastAPI) -> None:
    router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
    for module in (sign_in_pages, inbox_pages, step_pages, run_pages, audit_pages, admin_pages):
        router.include_router(module.router)
    app.include_router(router)
    app.add_api_route(CONSOLE_PREFIX, console_home, methods=["GET"], include_in_schema=False)
    app.mount(f"{CONSOLE_PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")

"""RFC 9457 problem+json for every error, naming the field and the reason where there is one."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("blocks.api")


class Problem(Exception):
    """Raise from anywhere in a request to answer with this problem."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        code: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.errors = errors
        self.headers = headers


def not_found(what: str) -> Problem:
    # The same answer whether the thing is missing or belongs to another organization.
    return Problem(404, "Not Found", f"{what} not found", code="not_found")


def invalid_field(field: str, reason: str) -> Problem:
    """A 422 naming one field, shaped like those FastAPI's own validation produces."""
    return Problem(
        422,
        "Invalid Request",
        f"{field}: {reason}",
        code="validation_error",
        errors=[{"field": field, "reason": reason}],
    )


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        "code": problem.code,
    }
    if problem.errors:
        body["errors"] = problem.errors
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_problem(errors: list[dict[str, Any]]) -> Problem:
    if any(e.get("type") == "json_invalid" for e in errors):
        return Problem(
            400, "Malformed JSON", "the request body is not valid JSON", code="malformed_json"
        )
    fields = [
        {"field": _field_path(tuple(e.get("loc", ()))), "reason": str(e.get("msg", "invalid"))}
        for e in errors
    ]
    summary = "; ".join(f"{f['field']}: {f['reason']}" for f in fields)
    return Problem(422, "Invalid Request", summary, code="validation_error", errors=fields)


async def _counted_invalid(request: Request, problem: Problem) -> Problem:
    """Count an invalid request (400/422) against rule "invalid_ip" of the client address:
    `problem` while under the limit, else the 429 (audited) that replaces it."""
    if request.client is None:
        return problem
    # Imported here: rate_limit imports this module (for Problem).
    from blocks.api import rate_limit

    try:
        await rate_limit.enforce_per_address(request, "invalid_ip")
    except Problem as refused:
        return refused
    return problem


def loggable_error(exc: BaseException) -> str:
    """What to log of an unexpected error: where it happened and what kind it is.

    A database error's message quotes the failing row (PostgreSQL's "Failing row contains ...")
    and so can carry password hashes, token hashes or sealed secrets: only its class and SQLSTATE
    are kept. Other errors keep their message.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    if isinstance(exc, DBAPIError):
        original = exc.orig
        kind = type(original).__name__ if original is not None else type(exc).__name__
        sqlstate = getattr(original, "sqlstate", None)
        return f"{kind} (SQLSTATE {sqlstate}); message withheld\n{frames}"
    return f"{type(exc).__name__}: {exc}\n{frames}"


class UnexpectedErrors:
    """ASGI middleware: an exception no handler took becomes a 500 problem, logged by
    `loggable_error` (never the raw message of a database error)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            _log.error(
                "unhandled error on %s %s: %s", scope["method"], scope["path"], loggable_error(exc)
            )
            if started:
                return  # the response is under way; the connection ends here
            problem = Problem(
                500, "Internal Server Error", "an unexpected error occurred", code="internal"
            )
            await problem_response(Request(scope), problem)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        if exc.status == 422:
            return problem_response(request, await _counted_invalid(request, exc))
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problem = validation_problem(list(exc.errors()))
        return problem_response(request, await _counted_invalid(request, problem))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        return problem_response(
            request,
            Problem(exc.status_code, title, str(exc.detail), code=title.lower().replace(" ", "_")),
        )

    # Outside Starlette's error middleware, which would log the raw exception (and its message)
    # again after our handler ran.
    app.add_middleware(UnexpectedErrors)

"""The app's error handlers: every error a problem+json answer, invalid requests counted per
address, a 405 naming the methods its path allows, and any unexpected exception a 500 problem
logged without its values."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blocks.api import rate_limit
from blocks.api.console.errors import console_problem, is_console
from blocks.api.errors import Problem, loggable_error, problem_response, validation_problem
from blocks.api.outages import outage_problem

_log = logging.getLogger("blocks.api")


_TITLES = {
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
}


async def counted_invalid(request: Request, problem: Problem) -> Problem:
    """Count an invalid request (400/413/415/422) against rule "invalid_ip" of the client
    address: `problem` while under the limit, else the 429 (audited) that replaces it."""
    if request.client is None:
        return problem
    try:
        await rate_limit.enforce_per_address(request, "invalid_ip")
    except Problem as refused:
        return refused
    return problem


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
            # A dependency that is down is a 503 the client may retry, not an unexpected error.
            problem = outage_problem(exc)
            if problem is None:
                _log.error(
                    "unhandled error on %s %s: %s",
                    scope["method"],
                    scope["path"],
                    loggable_error(exc),
                )
                problem = Problem(
                    500, "Internal Server Error", "an unexpected error occurred", code="internal"
                )
            if started:
                return  # the response is under way; the connection ends here
            await answer_problem(Request(scope), problem)(scope, receive, send)


def answer_problem(request: Request, problem: Problem) -> Response:
    """problem+json, or on a console page the page (or sign-in redirect) that shows it."""
    if is_console(request):
        return console_problem(request, problem)
    return problem_response(request, problem)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of this request's path answers. Starlette's own 405 names only
    the first route that matched the path, and GET and POST of one path are two routes here."""
    path = get_route_path(request.scope)
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        if exc.status == 422:
            return answer_problem(request, await counted_invalid(request, exc))
        return answer_problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        problem = validation_problem(list(exc.errors()))
        return answer_problem(request, await counted_invalid(request, problem))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = _TITLES.get(exc.status_code, "Error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return answer_problem(
            request,
            Problem(
                exc.status_code,
                title,
                str(exc.detail),
                code=title.lower().replace(" ", "_"),
                headers=headers or None,
            ),
        )

    # Dependency outages (PostgreSQL, Temporal, the rate limiter's store) are answered 503 with
    # Retry-After (api.outages, in UnexpectedErrors); a handler of an outage that arrives as an
    # exception type of its own goes here, beside these. The OpenAPI document promises that 503
    # on every route that uses the database or Temporal (api.openapi).

    # Outside Starlette's error middleware, which would log the raw exception (and its message)
    # again after our handler ran.
    app.add_middleware(UnexpectedErrors)

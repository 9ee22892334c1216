"""RFC 9457 problem+json for every error, naming the field and the reason where there is one."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

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


# How long a client should wait before retrying a 503 (a dependency down, a worker away).
RETRY_AFTER_SECONDS = 5


def service_unavailable(
    detail: str, *, code: str, retry_after: int = RETRY_AFTER_SECONDS
) -> Problem:
    """A 503 the client may retry after `retry_after` seconds (said in `Retry-After`)."""
    return Problem(
        503, "Service Unavailable", detail, code=code, headers={"Retry-After": str(retry_after)}
    )


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

"""The edge's checks of every request before a route sees it: no NUL character anywhere (422),
a body within the size limit (413), and a JSON body that is UTF-8 (415), within the depth and
member limits (413), valid (400) and without duplicate keys (422).

NUL is refused because PostgreSQL text cannot hold it: a NUL that reached a query failed there
as a 500, or, in a streamed answer, after its headers were sent. Python's JSON parser guesses
UTF-16 and UTF-32 from a body's bytes and keeps the last of duplicate keys; another parser of
the same body (a proxy, an audit reader) may not, so such bodies are refused rather than
interpreted. The size, depth and member limits are checked on the raw text, by a scan that runs
in the regular-expression engine, so an oversized document costs no parse.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.requests import Request, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blocks.api.error_handlers import counted_invalid
from blocks.api.errors import Problem, invalid_field, problem_response
from blocks.infra.settings import Settings

# Methods whose body no route reads: only the declared size is checked, the body is not read.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})
_BOM = b"\xef\xbb\xbf"
# A JSON string, escapes included; possessive, and also one left open at the end of the text
# (a lone backslash too), so a match never fails once started: one pass, linear in the text.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_NUL_REASON = "must not contain a NUL character"
_SURROGATE_REASON = "must be valid Unicode: it holds a lone surrogate"
# JSON's escapes of a NUL or of a UTF-16 surrogate: only a body with one of these is walked.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_SURROGATE = re.compile("[\ud800-\udfff]")
# An upload (POST .../attachments), or the console's decision form, which may carry one.
_UPLOAD_PATH = re.compile(r"/attachments/?\Z|\A/console/runs/[^/]+/steps/[^/]+/?\Z")
# What multipart framing (boundaries, part headers, a file name) may add to an upload's file.
UPLOAD_FRAMING_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_json_depth: int
    max_json_members: int
    # An attachment upload's body (POST .../attachments): the file's limit plus its framing.
    upload_body_bytes: int = 0

    def for_scope(self, scope: Scope) -> int:
        if scope["method"] == "POST" and _UPLOAD_PATH.search(scope["path"]):
            return max(self.max_body_bytes, self.upload_body_bytes)
        return self.max_body_bytes


class RequestLimits:
    """ASGI middleware: refuses a request that fails an edge check with a problem+json answer,
    counted as an invalid request of its address; passes any other on with its body intact."""

    def __init__(self, app: ASGIApp, *, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_scope(scope)
        problem = nul_in_request(scope) or self._declared_too_large(scope, limit)
        if problem is None and scope["method"] not in _BODILESS:
            body, problem = await self._read_body(receive, limit)
            problem = problem or check_body(_header(scope, b"content-type"), body, self.limits)
            receive = _replay(body, receive)
        if problem is not None:
            # Counting may audit the refusal (its path, user agent): with the NUL shown, as
            # PostgreSQL text cannot hold it.
            request = Request(_shown(scope), receive)
            await problem_response(request, await counted_invalid(request, problem))(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)

    def _declared_too_large(self, scope: Scope, limit: int) -> Problem | None:
        declared = _header(scope, b"content-length")
        # (Past 18 digits it is over any limit, and int() of thousands of digits would raise.)
        if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            return _too_large(limit)
        return None

    async def _read_body(self, receive: Receive, limit: int) -> tuple[bytes, Problem | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left; the route meets the disconnect when it reads
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the route the body already read, then waits as the original."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _shown(scope: Scope) -> Scope:
    """The scope with each NUL of its path and headers written as `\\0`."""
    return {
        **scope,
        "path": scope["path"].replace("\x00", "\\0"),
        "headers": [(name, value.replace(b"\x00", b"\\0")) for name, value in scope["headers"]],
    }


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


def _printable(name: str) -> str:
    """A name fit to show in an answer: NUL as `\\0`, a lone surrogate as its escape."""
    return name.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\0")[:100]


def nul_in_request(scope: Scope) -> Problem | None:
    """A 422 naming where a NUL character is: the path, a query parameter, a header, a cookie."""
    if "\x00" in scope["path"]:
        return invalid_field("path", _NUL_REASON)
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return invalid_field(_printable(name) or "query", _NUL_REASON)
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if "\x00" in name or b"\x00" in raw_value:
            return invalid_field(f"header {_printable(name)}", _NUL_REASON)
        if name == "cookie":
            for cookie, value in cookie_parser(raw_value.decode("latin-1")).items():
                if "\x00" in cookie or "\x00" in value:
                    return invalid_field(f"cookie {_printable(cookie)}", _NUL_REASON)
    return None


def _media_type(content_type: str) -> tuple[str, dict[str, str]]:
    media, *params = content_type.split(";")
    parsed = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"').lower()
    return media.strip().lower(), parsed


def check_body(content_type: str, body: bytes, limits: Limits) -> Problem | None:
    """The body checks for its media type: JSON in full, a form for NUL characters."""
    if not body:
        return None
    media, params = _media_type(content_type)
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return _check_json(body, params.get("charset"), limits)
    if media == "application/x-www-form-urlencoded":
        for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return invalid_field(_printable(name) or "body", _NUL_REASON)
    return None


def _check_json(body: bytes, charset: str | None, limits: Limits) -> Problem | None:
    if charset not in (None, "utf-8", "utf8"):
        return _not_utf8(f"charset={charset} is not accepted")
    if body.startswith(_BOM):
        return _not_utf8("it starts with a byte order mark")
    # No NUL byte can be in UTF-8 JSON (it would be an unescaped control character), and UTF-16
    # and UTF-32 text is full of them: the clearest sign of a body in one of those.
    if b"\x00" in body:
        return _not_utf8("it has NUL bytes, as UTF-16 and UTF-32 text does")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return _not_utf8(f"byte {err.start} is not UTF-8")
    problem = _check_shape(text, limits)
    if problem is not None:
        return problem
    try:
        document = json.loads(
            text, object_pairs_hook=_object, parse_constant=_refuse_constant, parse_float=_float
        )
    except _DuplicateKey as duplicate:
        return invalid_field(duplicate.key, "appears more than once in its object")
    except ValueError as err:  # JSONDecodeError, an integer of too many digits, NaN
        return Problem(
            400,
            "Malformed JSON",
            f"the request body is not valid JSON: {err}",
            code="malformed_json",
        )
    if _SUSPECT_ESCAPE.search(text):
        unfit = next(_unfit_strings(document, ()), None)
        if unfit is not None:
            where, reason = unfit
            return invalid_field(".".join(where) or "body", reason)
    return None


def _check_shape(text: str, limits: Limits) -> Problem | None:
    """Depth and member count from the text with its strings taken out, before any parse."""
    skeleton = _JSON_STRING.sub('""', text)
    members = skeleton.count(",") + 1
    if members > limits.max_json_members:
        return Problem(
            413,
            "Content Too Large",
            f"the JSON body has more than {limits.max_json_members} members in all",
            code="too_many_members",
        )
    brackets = _NOT_BRACKET.sub("", skeleton)
    if len(brackets) > limits.max_json_depth:
        # A run of openers longer than the limit settles it at once (the usual deep bomb);
        # otherwise the running depth, in C but for one lookup per bracket.
        openers = r"[\[{]{" + str(limits.max_json_depth + 1) + "}"
        deepest = (
            limits.max_json_depth + 1
            if re.search(openers, brackets)
            else max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)
        )
        if deepest > limits.max_json_depth:
            return Problem(
                413,
                "Content Too Large",
                f"the JSON body is nested deeper than {limits.max_json_depth} levels",
                code="too_deep",
            )
    return None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(_printable(key) or '""')
            seen.add(key)
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _float(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        raise ValueError(f"{literal[:20]}... is too large a number")
    return number


def _unfit(text: str) -> str | None:
    """Why PostgreSQL text could not hold this string, if it could not."""
    if "\x00" in text:
        return _NUL_REASON
    if _SURROGATE.search(text):
        return _SURROGATE_REASON
    return None


def _unfit_strings(value: Any, where: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """The strings (keys or values) PostgreSQL text could not hold: field path and reason."""
    if isinstance(value, str):
        reason = _unfit(value)
        if reason is not None:
            yield where, reason
    elif isinstance(value, dict):
        for key, item in value.items():
            path = (*where, _printable(key))
            reason = _unfit(key)
            if reason is not None:
                yield path, reason
            yield from _unfit_strings(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unfit_strings(item, (*where, str(index)))


def _not_utf8(reason: str) -> Problem:
    return Problem(
        415,
        "Unsupported Media Type",
        f"a JSON body must be UTF-8 without a byte order mark: {reason}",
        code="unsupported_encoding",
    )


def _too_large(limit: int) -> Problem:
    return Problem(
        413,
        "Content Too Large",
        f"the request body is larger than {limit} bytes",
        code="too_large",
    )


def install_request_limits(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(
        RequestLimits,
        limits=Limits(
            max_body_bytes=settings.max_body_bytes,
            max_json_depth=settings.max_json_depth,
            max_json_members=settings.max_json_members,
            upload_body_bytes=settings.attachment_max_bytes + UPLOAD_FRAMING_BYTES,
        ),
    )

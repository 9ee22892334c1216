"""The edge checks of api.request_limits on their own: where a NUL is found, and what a body
is refused for (the e2e tests show the same through the real server)."""

from __future__ import annotations

import codecs
import json

import pytest

from blocks.api.errors import Problem
from blocks.api.request_limits import Limits, check_body, nul_in_request

LIMITS = Limits(max_body_bytes=10_000, max_json_depth=4, max_json_members=20)
JSON = "application/json"


def _scope(
    path: str = "/v1/runs", query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, object]:
    return {"type": "http", "path": path, "query_string": query, "headers": headers or []}


def _field(problem: Problem | None) -> str:
    assert problem is not None
    assert problem.status == 422
    assert problem.errors is not None
    [error] = problem.errors
    return error["field"]


@pytest.mark.parametrize(
    ("scope", "field"),
    [
        (_scope(path="/v1/runs/\x00"), "path"),
        (_scope(query=b"actor_id=%00"), "actor_id"),
        (_scope(query=b"a=1&b=x%00y"), "b"),
        (_scope(query=b"x%00=1"), "x\\0"),
        (_scope(headers=[(b"x-client", b"a\x00b")]), "header x-client"),
        (_scope(headers=[(b"cookie", b'a=1; s="x\\000y"')]), "cookie s"),
    ],
)
def test_a_nul_is_found_where_it_is(scope: dict[str, object], field: str) -> None:
    assert _field(nul_in_request(scope)) == field


def test_a_request_without_nul_passes() -> None:
    scope = _scope(query=b"a=%2500&b=%5Cu0000", headers=[(b"cookie", b"a=1; b=2")])
    assert nul_in_request(scope) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"a": "x\\u0000"}', "a"),
        ('{"a": {"b": ["ok", "\\u0000"]}}', "a.b.1"),
        ('{"a\\u0000": 1}', "a\\0"),
        ('{"a": 1, "a": 2}', "a"),
        ('{"a": {"b": 1, "b": 1}}', "b"),
        ('{"a": ["x\\ud800"]}', "a.0"),
        ('{"a": "\\uDFFF"}', "a"),
        ('{"\\udfff": 1}', "\\udfff"),
    ],
)
def test_unfit_strings_and_duplicate_keys_are_422(body: str, field: str) -> None:
    assert _field(check_body(JSON, body.encode(), LIMITS)) == field


@pytest.mark.parametrize(
    "body",
    [
        '{"a": "\\\\u0000"}',  # an escaped backslash, then the text u0000: no NUL
        '{"a": "[[[[[[{{{{,,,,,,,,,,,,,,,,,,,,,,,,"}',  # brackets and commas inside a string
        '{"a": {"b": {"c": 1}}}',
        '{"a": "caf\u00e9 \u2603"}',
        '{"a": "\\ud83d\\ude00"}',  # a surrogate pair: one character, fine
    ],
)
def test_valid_json_passes(body: str) -> None:
    assert check_body(JSON, body.encode(), LIMITS) is None


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (json.dumps({"a": 1}).encode("utf-16"), JSON, 415, "unsupported_encoding"),
        (json.dumps({"a": 1}).encode("utf-32-be"), JSON, 415, "unsupported_encoding"),
        (codecs.BOM_UTF8 + b'{"a": 1}', JSON, 415, "unsupported_encoding"),
        (b'{"a": "\xe9"}', JSON, 415, "unsupported_encoding"),
        (b'{"a": 1}', "application/json; charset=iso-8859-1", 415, "unsupported_encoding"),
        (b'{"a": 1}', "application/merge-patch+json; charset=utf-16", 415, "unsupported_encoding"),
        (b"[" * 5 + b"]" * 5, JSON, 413, "too_deep"),
        (json.dumps(list(range(21))).encode(), JSON, 413, "too_many_members"),
        (b'{"a": NaN}', JSON, 400, "malformed_json"),
        # An open string of escaped quotes: a scanner that backtracked would take minutes.
        (b'["' + b'\\"' * 100_000 + b"\\", JSON, 400, "malformed_json"),
        (b'{"a": 1', JSON, 400, "malformed_json"),
    ],
)
def test_bodies_refused(body: bytes, content_type: str, status: int, code: str) -> None:
    problem = check_body(content_type, body, LIMITS)
    assert problem is not None
    assert (problem.status, problem.code) == (status, code)


def test_other_media_types_are_left_to_their_routes() -> None:
    assert check_body("text/plain", b"\xff\xfe", LIMITS) is None
    assert check_body("", b"{", LIMITS) is None
    assert check_body(JSON, b"", LIMITS) is None
    form = "application/x-www-form-urlencoded"
    assert check_body(form, b"decision=approve&comment=ok", LIMITS) is None
    assert _field(check_body(form, b"decision=approve&comment=%00", LIMITS)) == "comment"

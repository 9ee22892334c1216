"""Schemathesis over the whole API, from its own OpenAPI document, against the real app on
loopback: with an owner's API key and with an approver's, valid and invalid requests to every
operation (but those that need Slack) must never get a 5xx, and every answer must be one the
document promises (status code, content type, headers, body schema).

Each operation gets Schemathesis's coverage cases (every parameter and body field at and past
its bounds, wrong types, missing and unexpected parameters, methods the path does not have) and
a few fuzzed examples, positive and negative. The requests are blocking (`requests`), so they
run in a thread while the session's event loop serves the app.

Schemathesis's own pytest integration (`schema.parametrize()`, `pytest.from_fixture`) is not
used: its lazy loader fails on pytest 9 (`'Function' object has no attribute '_nodeid'`), and
its tests would block the event loop the `stack` fixture's server runs on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks as openapi_checks
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.roles import Permission, Role, has_permission
from tests.support import Stack, make_org

# Fuzzed examples per operation and generation mode, on top of the coverage cases (about 1,800
# for all operations): the whole test makes about 4,500 requests.
EXAMPLES = 4
# The Slack routes call Slack's API or need its signing secret: nothing here may leave the
# machine. Email is off in this stack (no SMTP host): the email routes answer 503 for that, as
# documented, and their validation is fuzzed like any other.
EXCLUDED_PREFIXES = ("/v1/integrations/slack",)


@schemathesis.check
def not_a_server_error_but_mail_is_off(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis's own check, but for the 503s this stack gives on purpose: it sends no email
    (a request valid enough to reach that, such as the document's own example, gets it), and
    readiness says when a dependency did not answer its probe."""
    if response.status_code == 503 and b'"code":"email_not_configured"' in response.content:
        return None
    # Readiness answers 503 naming the dependency that did not answer: its documented purpose.
    # About 4,500 requests in a row can make the dev server refuse one of its probes for a moment.
    if (
        response.status_code == 503
        and case.path == "/readyz"
        and b'"status":"unavailable"' in response.content
    ):
        return None
    return schemathesis.checks.not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_but_mail_is_off,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]


def _coverage_cases(operation: Any) -> Iterator[Any]:
    schema = operation.schema
    return schema.iter_coverage_cases(  # type: ignore[no-any-return]
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation_for(operation=operation, phase="coverage"),
    )


def _fuzz(operation: Any, mode: GenerationMode, check: Callable[[Any], None]) -> None:
    """`check` on a few cases Hypothesis draws from the operation's schema (always the same)."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        check(case)

    try:
        fuzz()
    except Unsatisfiable:
        # Nothing to make invalid: an operation without parameters or body.
        assert mode is GenerationMode.NEGATIVE


def _exercise(operation: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    """Send one operation's coverage cases and fuzzed examples; the failures found."""
    failures: list[str] = []

    def check(http: requests.Session, case: Any, phase: str) -> None:
        try:
            case.call_and_validate(
                base_url=base_url, session=http, headers=headers, checks=CHECKS, timeout=30
            )
        except (Exception, FailureGroup) as failure:  # collected: one run shows them all
            failures.append(f"{case.method} {operation.path} [{phase}]: {failure}"[:3000])

    with requests.Session() as http:
        for case in _coverage_cases(operation):
            check(http, case, "coverage")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, partial(check, http, phase=f"fuzzed {mode.value}"))
    return failures


def _role_may(role: str, operation: Any) -> bool:
    stated = operation.definition.raw.get("x-blocks-permission")
    permissions = {p.value: p for p in Permission}
    if stated not in permissions:
        return True  # public, session, agent or refused: not a role's permission
    return has_permission((Role(role),), permissions[stated])


@pytest.mark.parametrize("role", ["owner", "approver"])
async def test_every_answer_is_documented_and_none_is_a_server_error(
    stack: Stack, engine: AsyncEngine, role: str
) -> None:
    async with stack.http() as http:
        document = (await http.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if not result.ok().path.startswith(EXCLUDED_PREFIXES)
    ]
    assert len(operations) > 60
    if role != "owner":
        # What the role may not do answers 403 whatever the input (the authorization matrix
        # proves it for every route, and the document's contract test that each such route
        # documents its 403): the owner's run fuzzes those operations' input.
        operations = [op for op in operations if _role_may(role, op)]
    failures: list[str] = []
    for operation in operations:
        # A fresh organization for each operation: what one operation's requests change (say,
        # requiring two-factor sign-in) must not hide the next one behind a 403.
        org = await make_org(engine)
        failures += await asyncio.to_thread(_exercise, operation, stack.base_url, org[role].headers)
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures)

"""Pure rules: permissions by role, decision eligibility, key handling, canonical encoding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import rfc8785

from blocks.core.approvals.eligibility import (
    ApprovalStep,
    CastVote,
    Decision,
    DecisionRequest,
    RefusalReason,
    StepState,
    refusal_for,
)
from blocks.core.approvals.policy import ApprovalPolicy
from blocks.core.audit.chain import canonical_json, chain_hash
from blocks.core.roles import Permission, Role, has_permission, parse_roles
from blocks.infra.crypto.hashing import issue_api_key, secret_matches, split_api_key


@pytest.mark.parametrize(
    ("role", "permission", "allowed"),
    [
        (Role.OWNER, Permission.AUDIT_READ, True),
        (Role.ADMIN, Permission.RUN_START, True),
        (Role.OPERATOR, Permission.RUN_START, True),
        (Role.OPERATOR, Permission.STEP_DECIDE, False),
        (Role.OPERATOR, Permission.AUDIT_READ, False),
        (Role.APPROVER, Permission.STEP_DECIDE, True),
        (Role.APPROVER, Permission.RUN_START, False),
        (Role.AUDITOR, Permission.AUDIT_READ, True),
        (Role.AUDITOR, Permission.STEP_DECIDE, False),
    ],
)
def test_permission_table(role: Role, permission: Permission, allowed: bool) -> None:
    assert has_permission([role], permission) is allowed


def test_no_roles_grant_nothing_and_unknown_roles_are_refused() -> None:
    assert not any(has_permission([], p) for p in Permission)
    with pytest.raises(ValueError, match="superuser"):
        parse_roles(["superuser"])


def _step(**overrides: object) -> ApprovalStep:
    values: dict[str, object] = {
        "step_id": "s",
        "title": "t",
        "policy": ApprovalPolicy.any_of(users=["u-named"], roles=["approver"]),
        "opened_at": datetime.now(UTC),
        "deadline": None,
        "requester_id": "u-requester",
    }
    values.update(overrides)
    return ApprovalStep(**values)  # type: ignore[arg-type]


def _request(user: str, roles: tuple[str, ...] = ()) -> DecisionRequest:
    return DecisionRequest(
        step_id="s", actor_user_id=user, actor_roles=roles, decision=Decision.APPROVE
    )


def test_eligibility() -> None:
    assert refusal_for(None, _request("u")) is RefusalReason.STEP_NOT_FOUND
    assert (
        refusal_for(_step(state=StepState.APPROVED), _request("u-named"))
        is RefusalReason.STEP_CLOSED
    )
    assert (
        refusal_for(_step(), _request("u-requester", ("approver",))) is RefusalReason.SELF_APPROVAL
    )
    assert refusal_for(_step(), _request("u-other", ("operator",))) is RefusalReason.NOT_AN_APPROVER
    assert refusal_for(_step(), _request("u-named")) is None
    assert refusal_for(_step(), _request("u-other", ("approver",))) is None
    voted = _step()
    voted.record(CastVote("u-named", (), Decision.REJECT, datetime.now(UTC), "api"))
    assert voted.state is StepState.REJECTED
    two = _step(policy=ApprovalPolicy.n_of(2, roles=["approver"]))
    two.record(CastVote("u-a", ("approver",), Decision.APPROVE, datetime.now(UTC), "api"))
    assert two.state is StepState.PENDING
    assert refusal_for(two, _request("u-a", ("approver",))) is RefusalReason.ALREADY_VOTED
    assert (
        refusal_for(two, _request("u-b", ("approver",)), approved_earlier=frozenset({"u-b"}))
        is RefusalReason.APPROVED_EARLIER_IN_CHAIN
    )


def test_api_keys_round_trip_and_reject_tampering() -> None:
    issued = issue_api_key()
    parts = split_api_key(issued.plaintext)
    assert parts is not None
    lookup, secret = parts
    assert lookup == issued.lookup
    assert secret_matches(secret, issued.secret_hash)
    assert not secret_matches(secret + "x", issued.secret_hash)
    assert issued.plaintext not in issued.secret_hash
    for bad in ("", "blk", "blk__x", "xyz_abc_def", "blk_abc_"):
        assert split_api_key(bad) is None


def test_canonical_encoding_is_order_independent_and_hash_depends_on_link() -> None:
    assert (
        canonical_json({"b": 1, "a": "é"})
        == canonical_json({"a": "é", "b": 1})
        == '{"a":"é","b":1}'.encode()
    )
    assert chain_hash("0" * 64, {"a": 1}) != chain_hash("1" * 64, {"a": 1})
    # RFC 8785 number form: integral floats lose their fraction, exponents follow ECMAScript.
    assert canonical_json({"n": 1.0, "m": 1e21}) == b'{"m":1e+21,"n":1}'
    with pytest.raises(rfc8785.FloatDomainError):
        canonical_json({"x": float("nan")})

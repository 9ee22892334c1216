"""A step's context (`request_approval(context=...)`): only a JSON object of string keys within
64 KiB is accepted, as a plain copy with the SHA-256 of its canonical JSON; anything else fails
the run at once, naming the step and why. It shows to a viewer only while they may decide the
step, and its hash is sealed in the step.opened event like the title."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from temporalio.exceptions import ApplicationError

from blocks.core.approvals.eligibility import (
    ApprovalStep,
    CastVote,
    Decision,
    Delegator,
    StepState,
)
from blocks.core.approvals.policy import ApprovalPolicy
from blocks.models.audit.content import content_names
from blocks.workflows.step_context import (
    INVALID_CONTEXT,
    MAX_CONTEXT_BYTES,
    checked_context,
    shown_context,
)
from blocks.workflows.types import StatusViewer

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_a_json_object_is_kept_as_a_plain_copy_with_its_canonical_hash() -> None:
    draft = ["one", "two"]
    given = OrderedDict(
        [("draft", "Dear customer, ...\n"), ("lines", draft), ("n", 3), ("meta", {"ok": True})]
    )
    checked = checked_context("review", given)
    expected = {
        "draft": "Dear customer, ...\n",
        "lines": ["one", "two"],
        "n": 3,
        "meta": {"ok": True},
    }
    assert checked.value == expected
    assert checked.sha256 == hashlib.sha256(rfc8785.dumps(expected)).hexdigest()
    draft.append("three")  # the author's object changes later: the step's context does not
    assert checked.value["lines"] == ["one", "two"]
    # Key order and tuples do not change the hash: it is the canonical JSON's.
    again = checked_context(
        "review",
        {"n": 3, "meta": {"ok": True}, "lines": ("one", "two"), "draft": "Dear customer, ...\n"},
    )
    assert again.sha256 == checked.sha256


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ({1: "draft"}, "object keys must be strings"),
        ({"nested": {2: "x"}}, "object keys must be strings"),
        ({"at": datetime(2026, 1, 1, tzinfo=UTC)}, "unsupported type"),
        ({"ids": {1, 2}}, "unsupported type"),
        ({"score": math.nan}, "JSON values only"),
        ({"score": math.inf}, "JSON values only"),
        ({"big": 2**60}, "JSON values only"),
        ({"draft": "x" * MAX_CONTEXT_BYTES}, f"at most {MAX_CONTEXT_BYTES} are allowed"),
        (["draft"], "a mapping of string keys, not list"),
        ("draft", "a mapping of string keys, not str"),
    ],
)
def test_anything_else_fails_the_run_at_once_naming_the_step(context: Any, reason: str) -> None:
    with pytest.raises(ApplicationError) as refused:
        checked_context("review", context)
    assert refused.value.type == INVALID_CONTEXT
    assert refused.value.non_retryable
    assert "invalid context for step 'review'" in refused.value.message
    assert reason in refused.value.message


def test_a_context_that_refers_to_itself_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ApplicationError, match="invalid context for step 'review'"):
        checked_context("review", loop)


def test_the_size_cap_counts_the_encoded_bytes() -> None:
    overhead = len(rfc8785.dumps({"d": ""}))
    assert checked_context("s", {"d": "x" * (MAX_CONTEXT_BYTES - overhead)}).value
    with pytest.raises(ApplicationError, match="at most"):
        checked_context("s", {"d": "x" * (MAX_CONTEXT_BYTES - overhead + 1)})
    # Non-ASCII text counts in UTF-8 bytes, not characters.
    with pytest.raises(ApplicationError, match="at most"):
        checked_context("s", {"d": "é" * (MAX_CONTEXT_BYTES // 2)})


def _step(requester: str = "requester") -> ApprovalStep:
    return ApprovalStep(
        step_id="review",
        title="Reply to Acme",
        policy=ApprovalPolicy.any_of(roles=["approver"]),
        opened_at=NOW,
        deadline=None,
        requester_id=requester,
    )


def _viewer(user: str, *roles: str, delegators: tuple[Delegator, ...] = ()) -> StatusViewer:
    return StatusViewer(user_id=user, roles=roles, delegators=delegators)


def test_the_context_shows_only_to_who_may_decide_the_step_now() -> None:
    context = checked_context("review", {"draft": "Dear customer"})
    step = _step()
    shown = {"draft": "Dear customer"}

    def seen(viewer: StatusViewer | None, approved: frozenset[str] = frozenset()) -> Any:
        return shown_context(step, context, viewer, approved_earlier=approved)

    assert seen(None) == (shown, False)  # the worker's own callers
    assert seen(_viewer("alan", "approver")) == (shown, False)
    assert seen(_viewer("grace", "operator")) == (None, True)
    assert seen(_viewer("requester", "approver")) == (None, True)  # no self-approval
    by_delegation = _viewer("dan", delegators=(Delegator("alan", ("approver",)),))
    assert seen(by_delegation) == (shown, False)
    # Who approved an earlier step may still reject this one: they decide it, so they see it.
    assert seen(_viewer("alan", "approver"), frozenset({"alan"})) == (shown, False)
    assert shown_context(step, None, _viewer("alan", "approver"), approved_earlier=frozenset()) == (
        None,
        False,
    )

    step.record(CastVote("alan", ("approver",), Decision.APPROVE, NOW, "api"))
    assert step.state is StepState.APPROVED
    assert seen(_viewer("alan", "approver")) == (None, True)  # closed: nobody decides it now
    assert seen(_viewer("bea", "approver")) == (None, True)


def test_the_hash_is_sealed_in_the_step_opened_event_like_the_title() -> None:
    data = {"title": "Reply to Acme", "context_sha256": "ab" * 32, "policy": "any of approver"}
    assert sorted(content_names("step.opened", data)) == ["context_sha256", "title"]
    assert content_names("step.opened", {"title": "t", "context_sha256": None}) == ["title"]

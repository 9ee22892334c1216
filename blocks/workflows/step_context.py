"""A step's context (`request_approval(context=...)`): what its approvers see to decide it, such as
a model's draft. Checked when the step opens, kept in the workflow's own state, shown only to who
may decide the step now, and recorded in the audit log as its SHA-256 alone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from temporalio.exceptions import ApplicationError

from blocks.core.approvals.eligibility import ApprovalStep, Decision, DecisionRequest, refusal_for
from blocks.core.audit.chain import canonical_json
from blocks.workflows.types import StatusViewer

# Canonical JSON bytes: room for a long draft, not for a document the run should fetch itself.
MAX_CONTEXT_BYTES = 64 * 1024
INVALID_CONTEXT = "invalid_step_context"


@dataclass(frozen=True)
class StepContext:
    """A checked context: plain JSON (a copy: later changes to the author's objects do not
    reach it) and the SHA-256 of its canonical encoding (RFC 8785)."""

    value: dict[str, Any]
    sha256: str


def checked_context(step_id: str, context: Mapping[str, Any]) -> StepContext:
    """`context` as a StepContext; anything that is not a JSON object of string keys, or is
    larger than MAX_CONTEXT_BYTES encoded, fails the run at once (never retried)."""
    if not isinstance(context, Mapping):
        raise _invalid(step_id, f"it is a mapping of string keys, not {type(context).__name__}")
    try:
        encoded = canonical_json(dict(context))
    except (ValueError, RecursionError) as err:  # rfc8785's CanonicalizationError is a ValueError
        raise _invalid(
            step_id,
            f"it holds JSON values only (strings, numbers, booleans, null, lists, "
            f"mappings of string keys): {err}",
        ) from None
    if len(encoded) > MAX_CONTEXT_BYTES:
        raise _invalid(
            step_id, f"it is {len(encoded)} bytes as JSON; at most {MAX_CONTEXT_BYTES} are allowed"
        )
    return StepContext(json.loads(encoded), hashlib.sha256(encoded).hexdigest())


def shown_context(
    step: ApprovalStep,
    context: StepContext | None,
    viewer: StatusViewer | None,
    *,
    approved_earlier: frozenset[str],
) -> tuple[dict[str, Any] | None, bool]:
    """(the context `viewer` sees, whether one is hidden from them). Without a viewer (the
    worker's own callers, the testing kit) the context is whole; with one, it shows only while
    the viewer may decide the step, by the rule every decision goes through. Rejecting is the
    wider right (approving also excludes who approved earlier in the run), so it is the test."""
    if context is None:
        return None, False
    if viewer is None:
        return context.value, False
    asking = DecisionRequest(
        step_id=step.step_id,
        actor_user_id=viewer.user_id,
        actor_roles=viewer.roles,
        decision=Decision.REJECT,
        delegators=viewer.delegators,
    )
    if refusal_for(step, asking, approved_earlier=approved_earlier) is None:
        return context.value, False
    return None, True


def _invalid(step_id: str, reason: str) -> ApplicationError:
    return ApplicationError(
        f"invalid context for step {step_id!r}: {reason}", type=INVALID_CONTEXT, non_retryable=True
    )

"""Access reviews, the pure part: what is reviewed (items), the step each becomes, the report and its CSV.

An access review lists who and what can act for an organization (owners and admins, API keys,
integrations, single sign-on and SCIM connections, webhook destinations, agent tokens); each item
becomes one approval step of the built-in `access_review` workflow, where approving keeps the
item and rejecting revokes it. The report is built from the steps as they closed and what each
revocation did; its SHA-256 (over the RFC 8785 canonical JSON of `report_json`) is recorded in
the audit log, so a CSV exported later can be checked against the chain.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from blocks.core.audit.chain import canonical_json
from blocks.core.spreadsheet import defuse_formula

WORKFLOW_NAME = "access_review"
SCHEDULED_WORKFLOW_NAME = "blocks.access_review_scheduled"
# One review opens at most this many steps: what is left over is counted in the report and
# named in its warnings (an organization with more keys than this reviews them in parts).
MAX_ITEMS = 200
# An organization with fewer active owners and admins than this has a single point of failure.
MIN_ADMINS = 2


class ItemKind(StrEnum):
    ADMIN = "admin"  # an active owner or admin membership
    API_KEY = "api_key"
    LLM_CREDENTIAL = "llm_credential"
    SLACK = "slack"
    IDENTITY_PROVIDER = "identity_provider"
    SCIM_TOKEN = "scim_token"  # noqa: S105 - a kind of item, not a secret
    WEBHOOK = "webhook"
    AGENT_TOKEN = "agent_token"  # noqa: S105 - a kind of item, not a secret


# What rejecting (revoking) an item does, by kind.
REVOKE_ACTIONS: dict[ItemKind, str] = {
    ItemKind.ADMIN: "demote (remove the owner and admin roles)",
    ItemKind.API_KEY: "revoke the key",
    ItemKind.LLM_CREDENTIAL: "delete the credential",
    ItemKind.SLACK: "disconnect the Slack workspace",
    ItemKind.IDENTITY_PROVIDER: "disable the identity provider",
    ItemKind.SCIM_TOKEN: "revoke the SCIM token",
    ItemKind.WEBHOOK: "disable the destination",
    ItemKind.AGENT_TOKEN: "revoke the agent token",
}

_KIND_ORDER = {kind: position for position, kind in enumerate(ItemKind)}


class Trigger(StrEnum):
    MANUAL = "manual"  # an admin started it (POST /v1/access-reviews)
    SCHEDULE = "schedule"  # the organization's quarterly Temporal Schedule


class Applied(StrEnum):
    """What the review did to an item."""

    KEPT = "kept"  # approved: nothing changed
    REVOKED = "revoked"  # rejected, and the revocation was applied
    ALREADY_GONE = "already_gone"  # rejected, but it was revoked or removed meanwhile
    REFUSED = "refused"  # rejected, but applying it would break a rule (the last owner)
    NO_DECISION = "no_decision"  # the step expired or was cancelled: nothing changed


@dataclass(frozen=True)
class ReviewItem:
    """One thing that can act for the organization. `facts` are what the reviewer sees (owner,
    roles, last used, ...); `flags` call out what deserves a look (`owner_deactivated`)."""

    kind: ItemKind
    target_id: str
    label: str
    facts: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    @property
    def step_id(self) -> str:
        return step_id_for(self.kind, self.target_id)


@dataclass(frozen=True)
class Inventory:
    """What one review covers: the items (at most MAX_ITEMS), how many admins and owners the
    organization has, how many items did not fit, and the warnings for the report."""

    items: tuple[ReviewItem, ...]
    admin_count: int
    omitted: int = 0
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduledReviewRequest:
    """What the organization's schedule starts: the organization, nothing else."""

    org_id: str


@dataclass(frozen=True)
class ReviewStart:
    """A scheduled review's run, opened by the activity: its id and the workflow's input."""

    run_id: str
    params: dict[str, Any]


@dataclass(frozen=True)
class RevocationRequest:
    org_id: str
    run_id: str
    item: ReviewItem
    decided_by: str | None


@dataclass(frozen=True)
class RevocationResult:
    applied: Applied
    note: str = ""


@dataclass(frozen=True)
class ReportRow:
    kind: str
    target_id: str
    label: str
    facts: dict[str, str]
    flags: tuple[str, ...]
    step_id: str
    step_state: str  # approved, rejected, expired, cancelled
    decision: str  # keep, revoke, none
    decided_by: str | None
    decided_at: str | None
    applied: str
    note: str = ""


@dataclass(frozen=True)
class Report:
    run_id: str
    org_id: str
    trigger: str
    started_at: str
    finished_at: str
    admin_count: int
    omitted: int
    warnings: tuple[str, ...]
    rows: tuple[ReportRow, ...]
    # completed, or cancelled: the run was cancelled; items not decided by then say so.
    status: str = "completed"


@dataclass(frozen=True)
class ReportRequest:
    org_id: str
    report: Report


def step_id_for(kind: ItemKind, target_id: str) -> str:
    return f"{kind.value}-{target_id}"


def step_title(item: ReviewItem) -> str:
    return (
        f"Access review: keep {item.label}? Approve to keep, reject to {REVOKE_ACTIONS[item.kind]}"
    )


def step_context(item: ReviewItem) -> dict[str, Any]:
    """What the reviewers see beside the title: the item's facts, flags and what rejecting does."""
    return {
        "kind": item.kind.value,
        "item": item.label,
        "facts": dict(item.facts),
        "flags": list(item.flags),
        "if_rejected": REVOKE_ACTIONS[item.kind],
    }


def build_inventory(
    items: Iterable[ReviewItem], *, admin_count: int, limit: int = MAX_ITEMS
) -> Inventory:
    """The items in review order (by kind, flagged ones first, then by label), capped at
    `limit`, with the warnings the report carries."""
    ordered = sorted(items, key=lambda i: (_KIND_ORDER[i.kind], not i.flags, i.label, i.target_id))
    kept, omitted = ordered[:limit], len(ordered) - min(len(ordered), limit)
    warnings: list[str] = []
    if admin_count < MIN_ADMINS:
        warnings.append(
            f"only {admin_count} active owner or admin: at least {MIN_ADMINS} are recommended,"
            " so the organization has no single point of failure"
        )
    if omitted:
        warnings.append(
            f"{omitted} items did not fit in this review (at most {limit}); review them in"
            " another run"
        )
    return Inventory(tuple(kept), admin_count, omitted, tuple(warnings))


def decision_of(step_state: str) -> str:
    """keep (approved), revoke (rejected), none (expired, cancelled)."""
    return {"approved": "keep", "rejected": "revoke"}.get(step_state, "none")


def report_row(
    item: ReviewItem,
    *,
    step_state: str,
    decided_by: str | None,
    decided_at: str | None,
    result: RevocationResult | None,
) -> ReportRow:
    decision = decision_of(step_state)
    if decision == "keep":
        applied, note = Applied.KEPT, ""
    elif decision == "revoke" and result is not None:
        applied, note = result.applied, result.note
    else:
        applied, note = Applied.NO_DECISION, f"step {step_state}"
    return ReportRow(
        kind=item.kind.value,
        target_id=item.target_id,
        label=item.label,
        facts=dict(item.facts),
        flags=tuple(item.flags),
        step_id=item.step_id,
        step_state=step_state,
        decision=decision,
        decided_by=decided_by,
        decided_at=decided_at,
        applied=applied.value,
        note=note,
    )


def summary(report: Report) -> dict[str, Any]:
    """The counts the audit event and the API show."""
    counts = {applied.value: 0 for applied in Applied}
    for row in report.rows:
        counts[row.applied] = counts.get(row.applied, 0) + 1
    return {
        "items": len(report.rows),
        "omitted": report.omitted,
        "admin_count": report.admin_count,
        "warnings": list(report.warnings),
        **counts,
    }


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON (what is stored and hashed)."""
    return {
        "format": "blocks.access_review.v1",
        "run_id": report.run_id,
        "org_id": report.org_id,
        "status": report.status,
        "trigger": report.trigger,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "admin_count": report.admin_count,
        "omitted": report.omitted,
        "warnings": list(report.warnings),
        "rows": [
            {
                "kind": r.kind,
                "target_id": r.target_id,
                "label": r.label,
                "facts": dict(r.facts),
                "flags": list(r.flags),
                "step_id": r.step_id,
                "step_state": r.step_state,
                "decision": r.decision,
                "decided_by": r.decided_by,
                "decided_at": r.decided_at,
                "applied": r.applied,
                "note": r.note,
            }
            for r in report.rows
        ],
    }


def report_from_json(data: Mapping[str, Any]) -> Report:
    return Report(
        run_id=data["run_id"],
        org_id=data["org_id"],
        status=data["status"],
        trigger=data["trigger"],
        started_at=data["started_at"],
        finished_at=data["finished_at"],
        admin_count=int(data["admin_count"]),
        omitted=int(data["omitted"]),
        warnings=tuple(data["warnings"]),
        rows=tuple(
            ReportRow(**{**row, "facts": dict(row["facts"]), "flags": tuple(row["flags"])})
            for row in data["rows"]
        ),
    )


def report_sha256(report: Report) -> str:
    return hashlib.sha256(canonical_json(report_json(report))).hexdigest()


CSV_COLUMNS: tuple[str, ...] = (
    "kind",
    "item",
    "target_id",
    "facts",
    "flags",
    "decision",
    "applied",
    "note",
    "decided_by",
    "decided_at",
    "step_id",
    "step_state",
)


def csv_rows(report: Report) -> list[list[str]]:
    """The header and one row per item, every cell defused against spreadsheet formulas."""
    rows: list[list[str]] = [list(CSV_COLUMNS)]
    for r in report.rows:
        cells: Sequence[str | None] = (
            r.kind,
            r.label,
            r.target_id,
            "; ".join(f"{k}={v}" for k, v in sorted(r.facts.items())),
            " ".join(r.flags),
            r.decision,
            r.applied,
            r.note,
            r.decided_by,
            r.decided_at,
            r.step_id,
            r.step_state,
        )
        rows.append([defuse_formula(cell or "") for cell in cells])
    return rows


def csv_text(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(csv_rows(report))
    return out.getvalue()

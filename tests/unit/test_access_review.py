"""Access reviews' pure rules: items in review order and capped, each item's step, the report
(decision and what was applied per item, its summary and hash), and its CSV defused."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest

from blocks.core.approvals.policy import ApproverGroup
from blocks.core.audit.chain import canonical_json
from blocks.core.identity.access_review import (
    CSV_COLUMNS,
    MAX_ITEMS,
    REVOKE_ACTIONS,
    Applied,
    ItemKind,
    Report,
    ReviewItem,
    RevocationResult,
    build_inventory,
    csv_rows,
    csv_text,
    decision_of,
    report_from_json,
    report_json,
    report_row,
    report_sha256,
    step_context,
    step_title,
    summary,
)
from blocks.workflows.access_review import AccessReviewParams, reviewer_policy


def _item(kind: ItemKind, target: str, label: str = "", *flags: str) -> ReviewItem:
    return ReviewItem(kind, target, label or f"{kind.value} {target}", {"owner": "a@x"}, flags)


def test_items_come_in_review_order_flagged_first_within_a_kind() -> None:
    items = [
        _item(ItemKind.WEBHOOK, "w1"),
        _item(ItemKind.API_KEY, "k1", "key b"),
        _item(ItemKind.API_KEY, "k2", "key c", "owner_deactivated"),
        _item(ItemKind.ADMIN, "u1"),
        _item(ItemKind.API_KEY, "k3", "key a"),
    ]
    inventory = build_inventory(items, admin_count=2)
    assert [i.target_id for i in inventory.items] == ["u1", "k2", "k3", "k1", "w1"]
    assert inventory.omitted == 0
    assert inventory.warnings == ()


@pytest.mark.parametrize("admins", [0, 1])
def test_fewer_than_two_admins_is_a_warning(admins: int) -> None:
    inventory = build_inventory([_item(ItemKind.ADMIN, "u1")], admin_count=admins)
    assert len(inventory.warnings) == 1
    assert f"only {admins} active owner or admin" in inventory.warnings[0]


def test_items_beyond_the_cap_are_counted_and_said() -> None:
    items = [_item(ItemKind.API_KEY, f"k{n:04}") for n in range(MAX_ITEMS + 7)]
    inventory = build_inventory(items, admin_count=2)
    assert len(inventory.items) == MAX_ITEMS
    assert inventory.omitted == 7
    assert inventory.warnings == (
        f"7 items did not fit in this review (at most {MAX_ITEMS}); review them in another run",
    )
    assert len(build_inventory(items, admin_count=2, limit=3).items) == 3


def test_each_item_becomes_a_step_that_says_what_rejecting_does() -> None:
    item = _item(ItemKind.API_KEY, "1c0f", "API key 'ci' of bob@x", "never_used")
    assert item.step_id == "api_key-1c0f"
    assert step_title(item) == (
        "Access review: keep API key 'ci' of bob@x? Approve to keep, reject to revoke the key"
    )
    assert step_context(item) == {
        "kind": "api_key",
        "item": "API key 'ci' of bob@x",
        "facts": {"owner": "a@x"},
        "flags": ["never_used"],
        "if_rejected": "revoke the key",
    }
    assert set(REVOKE_ACTIONS) == set(ItemKind)


def test_reviewers_are_the_named_members_and_group_else_the_owners() -> None:
    named = reviewer_policy(AccessReviewParams(reviewers=["u1", "u2"], reviewer_group="security"))
    assert named.groups == (
        ApproverGroup("reviewers", ("u1", "u2"), (), 1, member_groups=("security",)),
    )
    assert reviewer_policy(AccessReviewParams()).labels() == ["role:owner"]


@pytest.mark.parametrize(
    ("state", "result", "decision", "applied"),
    [
        ("approved", None, "keep", "kept"),
        ("rejected", RevocationResult(Applied.REVOKED), "revoke", "revoked"),
        ("rejected", RevocationResult(Applied.REFUSED, "last owner"), "revoke", "refused"),
        ("rejected", RevocationResult(Applied.ALREADY_GONE), "revoke", "already_gone"),
        ("expired", None, "none", "no_decision"),
        ("cancelled", None, "none", "no_decision"),
    ],
)
def test_a_row_says_the_decision_and_what_was_applied(
    state: str, result: RevocationResult | None, decision: str, applied: str
) -> None:
    row = report_row(
        _item(ItemKind.ADMIN, "u1"),
        step_state=state,
        decided_by="u9" if decision != "none" else None,
        decided_at=None,
        result=result,
    )
    assert (row.decision, row.applied, row.step_id) == (decision, applied, "admin-u1")
    assert decision_of(state) == decision


def _report(*rows_of: tuple[ReviewItem, str, RevocationResult | None]) -> Report:
    rows = tuple(
        report_row(
            item,
            step_state=state,
            decided_by="u9",
            decided_at="2026-12-03T10:00:00+00:00",
            result=result,
        )
        for item, state, result in rows_of
    )
    return Report(
        run_id="r1",
        org_id="o1",
        trigger="schedule",
        started_at="2026-12-03T09:00:00+00:00",
        finished_at="2026-12-03T11:00:00+00:00",
        admin_count=1,
        omitted=0,
        warnings=("only 1 active owner or admin",),
        rows=rows,
    )


def test_the_summary_counts_each_outcome() -> None:
    report = _report(
        (_item(ItemKind.ADMIN, "u1"), "approved", None),
        (_item(ItemKind.API_KEY, "k1"), "rejected", RevocationResult(Applied.REVOKED)),
        (_item(ItemKind.API_KEY, "k2"), "expired", None),
    )
    assert summary(report) == {
        "items": 3,
        "omitted": 0,
        "admin_count": 1,
        "warnings": ["only 1 active owner or admin"],
        "kept": 1,
        "revoked": 1,
        "already_gone": 0,
        "refused": 0,
        "no_decision": 1,
    }


def test_the_report_hash_covers_its_canonical_json_and_survives_storage() -> None:
    report = _report((_item(ItemKind.SLACK, "T1"), "approved", None))
    stored = json.loads(json.dumps(report_json(report)))  # as JSONB gives it back
    assert report_from_json(stored) == report
    assert report_sha256(report) == hashlib.sha256(canonical_json(stored)).hexdigest()
    changed = _report((_item(ItemKind.SLACK, "T1"), "rejected", RevocationResult(Applied.REVOKED)))
    assert report_sha256(changed) != report_sha256(report)


def test_the_csv_lists_every_item_and_defuses_formulas() -> None:
    hostile = ReviewItem(
        ItemKind.API_KEY, "k1", '=HYPERLINK("http://x")', {"owner": "@evil", "roles": "admin"}
    )
    report = _report(
        (hostile, "rejected", RevocationResult(Applied.REVOKED)),
        (_item(ItemKind.WEBHOOK, "w1"), "approved", None),
    )
    rows = csv_rows(report)
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1][:3] == ["api_key", '\'=HYPERLINK("http://x")', "k1"]
    assert rows[1][3] == "owner=@evil; roles=admin"
    parsed = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert [(r["step_id"], r["decision"], r["applied"]) for r in parsed] == [
        ("api_key-k1", "revoke", "revoked"),
        ("webhook-w1", "keep", "kept"),
    ]
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)

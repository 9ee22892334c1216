"""Quorum across groups, N-of-M, all-of, rejection policies, and one person counting once."""

from __future__ import annotations

import pytest

from blocks.core.approvals.policy import (
    ApprovalPolicy,
    ApproverGroup,
    Outcome,
    RejectionPolicy,
    Vote,
)


def yes(user: str, *roles: str) -> Vote:
    return Vote(user, roles, approve=True)


def no(user: str, *roles: str) -> Vote:
    return Vote(user, roles, approve=False)


def test_any_one_approver() -> None:
    policy = ApprovalPolicy.any_of(roles=["approver"])
    assert policy.outcome([]) is Outcome.PENDING
    assert policy.outcome([yes("u1", "approver")]) is Outcome.APPROVED
    assert policy.outcome([yes("u1", "operator")]) is Outcome.PENDING  # not in the group


def test_all_of_named_users() -> None:
    policy = ApprovalPolicy.all_of(["a", "b", "c"])
    assert policy.outcome([yes("a"), yes("b")]) is Outcome.PENDING
    assert policy.outcome([yes("a"), yes("b"), yes("c")]) is Outcome.APPROVED


def test_n_of_m() -> None:
    policy = ApprovalPolicy.n_of(2, users=["a", "b", "c"])
    assert policy.outcome([yes("a")]) is Outcome.PENDING
    assert policy.outcome([yes("c"), yes("a")]) is Outcome.APPROVED


def test_quorum_across_groups_counts_each_person_once() -> None:
    policy = ApprovalPolicy(
        (
            ApproverGroup("finance", roles=("finance",), required=2),
            ApproverGroup("legal", roles=("legal",), required=1),
        )
    )
    both = ("finance", "legal")
    # Someone in both groups fills one seat, not two.
    assert policy.outcome([yes("x", *both), yes("f1", "finance")]) is Outcome.PENDING
    # The matching finds the assignment whatever the order of votes: x must sit in legal.
    assert (
        policy.outcome([yes("x", *both), yes("f1", "finance"), yes("f2", "finance")])
        is Outcome.APPROVED
    )
    assert (
        policy.outcome([yes("f1", "finance"), yes("x", *both), yes("f2", "finance")])
        is Outcome.APPROVED
    )
    assert (
        policy.outcome([yes("f1", "finance"), yes("f2", "finance"), yes("l1", "legal")])
        is Outcome.APPROVED
    )
    assert (
        policy.outcome([yes("l1", "legal"), yes("l2", "legal"), yes("f1", "finance")])
        is Outcome.PENDING
    )


def test_first_rejection_ends_the_step() -> None:
    policy = ApprovalPolicy.n_of(2, roles=["approver"])
    assert policy.outcome([yes("a", "approver"), no("b", "approver")]) is Outcome.REJECTED


def test_quorum_of_rejections() -> None:
    policy = ApprovalPolicy(
        (ApproverGroup("board", roles=("board",), required=3),),
        rejection=RejectionPolicy.QUORUM,
        rejections_required=2,
    )
    assert policy.outcome([no("a", "board")]) is Outcome.PENDING
    assert (
        policy.outcome([no("a", "board"), yes("b", "board"), no("c", "board")]) is Outcome.REJECTED
    )


def test_escalation_widens_or_adds() -> None:
    base = ApprovalPolicy.any_of(users=["manager"])
    assert base.widened(roles=["director"]).outcome([yes("d", "director")]) is Outcome.APPROVED
    added = base.with_group(ApproverGroup("director", roles=("director",)))
    assert added.outcome([yes("d", "director")]) is Outcome.PENDING  # both seats now needed
    assert added.outcome([yes("d", "director"), yes("manager")]) is Outcome.APPROVED
    assert set(added.labels()) == {"user:manager", "role:director"}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ApprovalPolicy(()), "at least one group"),
        (lambda: ApproverGroup("g"), "no users and no roles"),
        (lambda: ApproverGroup("g", user_ids=("a",), required=2), "requires 2 of only 1"),
        (lambda: ApproverGroup("g", roles=("r",), required=0), "at least one"),
        (
            lambda: ApprovalPolicy((ApproverGroup("g", ("a",)), ApproverGroup("g", ("b",)))),
            "unique",
        ),
    ],
)
def test_impossible_policies_are_refused(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        build()

"""Who may decide a step and when it is decided: groups, N-of-M quorum, rejection policy.

A policy is a set of groups, each needing some number of approvals from its members (named users
or holders of a role). "Any one approver" is one group needing 1; "all of these five" is one
group of five needing 5; "two from finance and one from legal" is two groups. One person counts
once, even when they belong to several groups: the step is approved when the approvals can be
assigned to the groups' seats with each approver in at most one seat (a bipartite matching).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class RejectionPolicy(StrEnum):
    FIRST = "first"  # the first rejection ends the step
    QUORUM = "quorum"  # `rejections_required` rejections end it


class Outcome(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


GROUP_PREFIX = "group:"


def group_marker(name: str) -> str:
    """How membership of an organization's member group travels beside role names."""
    return f"{GROUP_PREFIX}{name}"


def policy_memberships(roles: Iterable[str], groups: Iterable[str]) -> tuple[str, ...]:
    """A person's role names and member groups, as `ApproverGroup.includes` matches them."""
    return (*roles, *(group_marker(g) for g in groups))


@dataclass(frozen=True)
class ApproverGroup:
    """A seat set: named users, holders of a role, or members of an org's member group.

    Actor "roles" given to `includes` are role names plus `group:<name>` for each member group
    the actor belongs to.
    """

    name: str
    user_ids: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    required: int = 1
    member_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.required < 1:
            raise ValueError(f"group {self.name!r} must require at least one approval")
        if not self.user_ids and not self.roles and not self.member_groups:
            raise ValueError(f"group {self.name!r} names no users and no roles")
        if not self.roles and not self.member_groups and self.required > len(set(self.user_ids)):
            raise ValueError(
                f"group {self.name!r} requires {self.required} of only {len(set(self.user_ids))} users"
            )

    def includes(self, user_id: str, roles: Iterable[str]) -> bool:
        held = set(roles)
        return (
            user_id in self.user_ids
            or any(role in held for role in self.roles)
            or any(group_marker(g) in held for g in self.member_groups)
        )

    def labels(self) -> list[str]:
        return (
            [f"user:{u}" for u in self.user_ids]
            + [f"role:{r}" for r in self.roles]
            + [group_marker(g) for g in self.member_groups]
        )


@dataclass(frozen=True)
class Vote:
    user_id: str
    roles: tuple[str, ...]
    approve: bool


@dataclass(frozen=True)
class ApprovalPolicy:
    groups: tuple[ApproverGroup, ...]
    rejection: RejectionPolicy = RejectionPolicy.FIRST
    rejections_required: int = 1

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("an approval policy needs at least one group")
        if len({g.name for g in self.groups}) != len(self.groups):
            raise ValueError("approver group names must be unique within a policy")
        if self.rejections_required < 1:
            raise ValueError("rejections_required must be at least 1")

    @classmethod
    def any_of(cls, *, users: Sequence[str] = (), roles: Sequence[str] = ()) -> ApprovalPolicy:
        return cls((ApproverGroup("approvers", tuple(users), tuple(roles), 1),))

    @classmethod
    def all_of(cls, users: Sequence[str]) -> ApprovalPolicy:
        unique = tuple(dict.fromkeys(users))
        return cls((ApproverGroup("approvers", unique, (), len(unique)),))

    @classmethod
    def n_of(
        cls, required: int, *, users: Sequence[str] = (), roles: Sequence[str] = ()
    ) -> ApprovalPolicy:
        return cls((ApproverGroup("approvers", tuple(users), tuple(roles), required),))

    def with_group(self, group: ApproverGroup) -> ApprovalPolicy:
        """The same policy with one more group (escalation adds the escalation target)."""
        return ApprovalPolicy((*self.groups, group), self.rejection, self.rejections_required)

    def widened(self, *, users: Sequence[str] = (), roles: Sequence[str] = ()) -> ApprovalPolicy:
        """Let more people fill the existing seats (escalation may add approvers)."""
        groups = tuple(
            ApproverGroup(
                g.name,
                tuple(dict.fromkeys((*g.user_ids, *users))),
                tuple(dict.fromkeys((*g.roles, *roles))),
                g.required,
                g.member_groups,
            )
            for g in self.groups
        )
        return ApprovalPolicy(groups, self.rejection, self.rejections_required)

    def named_users(self) -> tuple[str, ...]:
        """Everyone the policy names by id, in order, once."""
        return tuple(dict.fromkeys(u for g in self.groups for u in g.user_ids))

    def without_users(self, users: Iterable[str]) -> ApprovalPolicy | None:
        """The policy with these people taken out of every group (they no longer count); None
        when a group could then never be filled: fewer named users left than it requires, and
        no role or member group to fill the rest."""
        gone = set(users)
        groups: list[ApproverGroup] = []
        for g in self.groups:
            kept = tuple(u for u in g.user_ids if u not in gone)
            if not g.roles and not g.member_groups and len(set(kept)) < g.required:
                return None
            groups.append(ApproverGroup(g.name, kept, g.roles, g.required, g.member_groups))
        return ApprovalPolicy(tuple(groups), self.rejection, self.rejections_required)

    def eligible(self, user_id: str, roles: Iterable[str]) -> bool:
        roles = tuple(roles)
        return any(group.includes(user_id, roles) for group in self.groups)

    def labels(self) -> list[str]:
        return list(dict.fromkeys(label for g in self.groups for label in g.labels()))

    def describe(self) -> dict[str, object]:
        """The policy as plain data, for audit events and reports."""
        return {
            "groups": [
                {
                    "name": g.name,
                    "users": list(g.user_ids),
                    "roles": list(g.roles),
                    "member_groups": list(g.member_groups),
                    "required": g.required,
                }
                for g in self.groups
            ],
            "rejection": self.rejection.value,
            "rejections_required": self.rejections_required,
        }

    def outcome(self, votes: Sequence[Vote]) -> Outcome:
        rejections = sum(1 for v in votes if not v.approve)
        needed = 1 if self.rejection is RejectionPolicy.FIRST else self.rejections_required
        if rejections >= needed:
            return Outcome.REJECTED
        if self._seats_filled([v for v in votes if v.approve]) == self._seats():
            return Outcome.APPROVED
        return Outcome.PENDING

    def _seats(self) -> int:
        return sum(g.required for g in self.groups)

    def _seats_filled(self, approvals: Sequence[Vote]) -> int:
        """Maximum bipartite matching of approvers to seats (augmenting paths; sizes are tiny)."""
        seats = [g for g in self.groups for _ in range(g.required)]
        seat_holder: list[int | None] = [None] * len(seats)

        def place(voter: int, visited: set[int]) -> bool:
            vote = approvals[voter]
            for seat, group in enumerate(seats):
                if seat in visited or not group.includes(vote.user_id, vote.roles):
                    continue
                visited.add(seat)
                holder = seat_holder[seat]
                if holder is None or place(holder, visited):
                    seat_holder[seat] = voter
                    return True
            return False

        return sum(1 for voter in range(len(approvals)) if place(voter, set()))

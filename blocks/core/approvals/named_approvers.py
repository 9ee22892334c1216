"""Approvers named by id: found in a run's input by its schema, and dropped when they stop counting.

A worker publishes each workflow's input as JSON Schema; fields that name approvers carry the
`APPROVER_MARK` keyword (`{}`, or `{"group": "<member group>"}`). Walking the schema together
with a start's input finds each named value with where it sits (`input.finance.1`) and what its
member must be in, so the API can check those members without importing the workflow.

The input has passed the schema already; the walk only needs to follow it, not judge it. Where a
union leaves doubt, every branch the value could match is followed: a value marked by any of them
is checked, and by the requirements of all of them.

When a step opens, the people its policy names are checked again; `without_members` says what
becomes of the step when some no longer count: the rest decide, or its escalation takes over at
once, or nobody can decide it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from blocks.core.approvals.catalogue import APPROVER_MARK
from blocks.core.approvals.eligibility import BreachAction, Escalation, OnBreach
from blocks.core.approvals.policy import ApprovalPolicy, ApproverGroup
from blocks.core.roles import Permission, Role, has_permission

_UNIONS = ("anyOf", "oneOf", "allOf")
# A schema pointing at itself through refs without consuming any input: followed this deep, no more.
_MAX_REF_DEPTH = 32


@dataclass(frozen=True)
class NamedApprover:
    """One member id named in the input, as given (not yet checked to be anything)."""

    field: str  # where the value sits: `input.director`, `input.legal.0`
    value: str
    # The member groups its member must belong to (each mark on the way may name one).
    groups: tuple[str, ...] = ()
    # The marked field it belongs to: the list for a list's item (`input.legal`), else `field`.
    marked_field: str = ""


@dataclass(frozen=True)
class _Mark:
    groups: tuple[str, ...]
    field: str


def member_uuid(value: str) -> uuid.UUID | None:
    """The member id `value` names, if written as Blocks writes ids (lowercase, hyphenated): a
    policy compares ids as text, so another spelling of an id would never match its member."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value else None


# Why a named approver is refused at start: the one rule, read by the API and by blocks.testing.
NOT_AN_ID = "must be a member id (a UUID, lowercase and hyphenated)"
NOT_A_MEMBER = "no member of this organization has this id"
DEACTIVATED = "this member is deactivated"
REQUESTER = "the requester cannot be an approver of their own run"
CANNOT_DECIDE = f"this member's roles do not grant {Permission.STEP_DECIDE.value}"


@dataclass(frozen=True)
class Standing:
    """What the organization knows of a member a start names."""

    active: bool
    roles: tuple[Role, ...]
    groups: tuple[str, ...]


def approver_refusal(
    named: NamedApprover, requester: uuid.UUID | None, standing: Standing | None
) -> str | None:
    """Why `named` may not approve (None: it may); `standing` is None for no such member."""
    user_id = member_uuid(named.value)
    if user_id is None:
        return NOT_AN_ID
    if user_id == requester:
        return REQUESTER
    if standing is None:
        return NOT_A_MEMBER
    if not standing.active:
        return DEACTIVATED
    if not has_permission(standing.roles, Permission.STEP_DECIDE):
        return CANNOT_DECIDE
    missing = [g for g in named.groups if g not in standing.groups]
    if missing:
        return f"this member is not in the member group {missing[0]!r}"
    return None


def named_approvers(
    schema: dict[str, Any], instance: Any, *, at: str = "input"
) -> list[NamedApprover]:
    """Every marked string in `instance`, in input order, once per field."""
    walker = _Walker(schema)
    walker.walk(schema, instance, at, None, 0)
    return list(walker.found.values())


class _Walker:
    def __init__(self, root: dict[str, Any]) -> None:
        self._root = root
        self.found: dict[str, NamedApprover] = {}
        # (schema node, place in the input, mark) already walked: a schema that reaches one node
        # by many routes (refs, unions) is walked there once, so no schema makes this explode.
        self._seen: set[tuple[int, str, _Mark | None]] = set()

    def walk(self, schema: Any, instance: Any, path: str, mark: _Mark | None, depth: int) -> None:
        if not isinstance(schema, dict):
            # `true` or absent (a list's unconstrained items): a mark from above still applies.
            if schema is not False and mark is not None and isinstance(instance, str):
                self._record(path, instance, mark)
            return
        mark = _merge(mark, schema.get(APPROVER_MARK), path)
        visit = (id(schema), path, mark)
        if visit in self._seen:
            return
        self._seen.add(visit)
        ref = schema.get("$ref")
        if isinstance(ref, str) and depth < _MAX_REF_DEPTH:
            target = self.resolve(ref)
            if target is not None:
                self.walk(target, instance, path, mark, depth + 1)
        for keyword in _UNIONS:
            for branch in schema.get(keyword) or ():
                if keyword == "allOf" or self.may_match(branch, instance):
                    self.walk(branch, instance, path, mark, depth + 1)
        if isinstance(instance, str):
            if mark is not None:
                self._record(path, instance, mark)
        elif isinstance(instance, list):
            self._walk_items(schema, instance, path, mark)
        elif isinstance(instance, dict):
            self._walk_properties(schema, instance, path)

    def _walk_items(
        self, schema: dict[str, Any], items: list[Any], path: str, mark: _Mark | None
    ) -> None:
        # A list's own mark reaches its items (a list of ids is one marked field), no deeper.
        prefix = schema.get("prefixItems") or []
        for index, item in enumerate(items):
            item_schema = prefix[index] if index < len(prefix) else schema.get("items")
            inherited = mark if isinstance(item, str) else None
            self.walk(item_schema, item, f"{path}.{index}", inherited, 0)

    def _walk_properties(self, schema: dict[str, Any], values: dict[str, Any], path: str) -> None:
        properties = schema.get("properties") or {}
        patterns = schema.get("patternProperties") or {}
        extra = schema.get("additionalProperties")
        for name, value in values.items():
            where = f"{path}.{name}"
            matched = False
            if name in properties:
                matched = True
                self.walk(properties[name], value, where, None, 0)
            for pattern, sub in patterns.items():
                if _pattern_matches(pattern, name):
                    matched = True
                    self.walk(sub, value, where, None, 0)
            if not matched:
                self.walk(extra, value, where, None, 0)

    def _record(self, path: str, value: str, mark: _Mark) -> None:
        earlier = self.found.get(path)
        groups = mark.groups if earlier is None else _union(earlier.groups, mark.groups)
        marked_field = mark.field if earlier is None else earlier.marked_field
        self.found[path] = NamedApprover(path, value, groups, marked_field)

    def resolve(self, ref: str) -> Any:
        """A local JSON pointer (`#/$defs/Name`); anything else is not ours to fetch."""
        if ref == "#":
            return self._root
        if not ref.startswith("#/"):
            return None
        node: Any = self._root
        for token in ref[2:].split("/"):
            key = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
        return node

    def may_match(self, schema: Any, instance: Any, depth: int = 0) -> bool:
        """False only when `schema` plainly cannot hold `instance` (wrong type, other constant,
        another discriminator value); in doubt, True, so a marked value is never missed."""
        if not isinstance(schema, dict):
            return schema is not False
        if depth > _MAX_REF_DEPTH:
            return True
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = self.resolve(ref)
            if target is not None and not self.may_match(target, instance, depth + 1):
                return False
        kind = schema.get("type")
        kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else None
        if kinds is not None and not any(_type_fits(instance, k) for k in kinds):
            return False
        if "const" in schema and schema["const"] != instance:
            return False
        if isinstance(schema.get("enum"), list) and instance not in schema["enum"]:
            return False
        if isinstance(instance, dict) and not self._object_may_match(schema, instance, depth):
            return False
        for keyword in ("anyOf", "oneOf"):
            branches = schema.get(keyword)
            if branches and not any(self.may_match(b, instance, depth + 1) for b in branches):
                return False
        return True

    def _object_may_match(
        self, schema: dict[str, Any], instance: dict[str, Any], depth: int
    ) -> bool:
        required = schema.get("required") or []
        if any(name not in instance for name in required if isinstance(name, str)):
            return False
        # A property pinned to a constant (a discriminator) tells the branches apart.
        for name, sub in (schema.get("properties") or {}).items():
            pinned = isinstance(sub, dict) and ("const" in sub or "enum" in sub)
            if pinned and name in instance and not self.may_match(sub, instance[name], depth):
                return False
        return True


def _merge(mark: _Mark | None, found: Any, path: str) -> _Mark | None:
    if not isinstance(found, dict):
        return mark
    group = found.get("group")
    groups = (group,) if isinstance(group, str) and group else ()
    if mark is None:
        return _Mark(groups, path)
    return _Mark(_union(mark.groups, groups), mark.field)


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "array": (list,),
    "object": (dict,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}


def _type_fits(instance: Any, name: str) -> bool:
    if isinstance(instance, bool) and name in ("number", "integer"):
        return False
    if name == "integer" and isinstance(instance, float):
        return instance.is_integer()
    return isinstance(instance, _JSON_TYPES.get(name, (object,)))


def _pattern_matches(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return True  # a pattern Python cannot read: follow it rather than miss a mark


# --- when the step opens ---------------------------------------------------------------------


@dataclass(frozen=True)
class ApproversLeft:
    """A step's approvers once those who no longer count are gone."""

    # None: nobody left could ever decide the step (it closes as expired).
    policy: ApprovalPolicy | None
    # What is left of the escalation for later: None once it was used now, or names no one.
    escalation: Escalation | None
    on_breach: OnBreach
    escalated: bool = False  # the escalation took over now
    reassigned: bool = False  # ... handing the step over (`Escalation.replace`)


def without_members(
    policy: ApprovalPolicy,
    escalation: Escalation | None,
    on_breach: OnBreach,
    gone: Iterable[str],
) -> ApproversLeft:
    """The step's policy, escalation and breach action without the people in `gone`.

    If the policy can still be satisfied, the rest decide. If not, the escalation (what is left of
    it) happens now, as its timer would have done later; without one, nobody can decide.
    """
    gone = frozenset(gone)
    left = _escalation_without(escalation, gone)
    breach = _breach_without(on_breach, gone)
    kept = policy.without_users(gone)
    if kept is not None:
        return ApproversLeft(kept, left, breach)
    if left is None:
        return ApproversLeft(None, None, breach)
    if left.replace:
        escalated: ApprovalPolicy | None = ApprovalPolicy(
            (ApproverGroup("escalation", left.users, left.roles, 1),),
            policy.rejection,
            policy.rejections_required,
        )
    else:
        escalated = policy.widened(users=left.users, roles=left.roles).without_users(gone)
    return ApproversLeft(
        escalated, None, breach, escalated=escalated is not None, reassigned=left.replace
    )


def _escalation_without(escalation: Escalation | None, gone: frozenset[str]) -> Escalation | None:
    if escalation is None:
        return None
    users = tuple(u for u in escalation.users if u not in gone)
    if not users and not escalation.roles:
        return None
    return Escalation(escalation.before, users, escalation.roles, escalation.replace)


def _breach_without(on_breach: OnBreach, gone: frozenset[str]) -> OnBreach:
    users = tuple(u for u in on_breach.users if u not in gone)
    if on_breach.action is BreachAction.ESCALATE and not users and not on_breach.roles:
        # Nobody left to escalate to: the deadline closes the step, as by default.
        return OnBreach(BreachAction.EXPIRE)
    return OnBreach(on_breach.action, users, on_breach.roles, on_breach.extend)

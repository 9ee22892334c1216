"""Finding the approvers a run's input names from its published JSON Schema alone: marked strings
through properties, lists, unions, `$ref`s into `$defs` and maps, with their member groups; and
what becomes of a step when some of the people it names no longer count."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from blocks_examples.purchase import PurchaseRequest
from pydantic import BaseModel, Field

from blocks.core.approvals.eligibility import BreachAction, Escalation, OnBreach
from blocks.core.approvals.named_approvers import (
    NamedApprover,
    member_uuid,
    named_approvers,
    without_members,
)
from blocks.core.approvals.policy import ApprovalPolicy, ApproverGroup
from blocks.workflows.types import MemberId, approver_field


def _found(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    schema = model.model_json_schema()
    return [(n.field, n.value, n.groups) for n in named_approvers(schema, data)]


def test_the_purchase_example_names_finance_legal_and_the_director() -> None:
    data = {
        "amount": "10",
        "description": "chairs",
        "finance": ["f1", "f2"],
        "legal": ["l1"],
        "director": "d1",
    }
    found = named_approvers(PurchaseRequest.model_json_schema(), data)
    assert found == [
        NamedApprover("input.finance.0", "f1", (), "input.finance"),
        NamedApprover("input.finance.1", "f2", (), "input.finance"),
        NamedApprover("input.legal.0", "l1", (), "input.legal"),
        NamedApprover("input.director", "d1", (), "input.director"),
    ]
    # Unmarked strings (the description) are not approvers; an empty list names nobody.
    assert [n.field for n in named_approvers(PurchaseRequest.model_json_schema(), {})] == []
    data["finance"] = []
    assert "input.finance.0" not in {
        n.field for n in named_approvers(PurchaseRequest.model_json_schema(), data)
    }


class _Grouped(BaseModel):
    legal: list[MemberId] = approver_field(group="legal", default_factory=list)
    lead: Annotated[str, approver_field(group="leads")]
    backup: MemberId | None = None
    note: str = ""


def test_a_group_on_a_list_reaches_its_items_and_optional_ids_are_found() -> None:
    assert _found(_Grouped, {"legal": ["a", "b"], "lead": "c", "backup": "d", "note": "x"}) == [
        ("input.legal.0", "a", ("legal",)),
        ("input.legal.1", "b", ("legal",)),
        ("input.lead", "c", ("leads",)),
        ("input.backup", "d", ()),
    ]
    assert _found(_Grouped, {"lead": "c", "backup": None}) == [("input.lead", "c", ("leads",))]


class _Panel(BaseModel):
    chair: MemberId
    members: list[MemberId] = approver_field(group="panel")
    topic: str


class _Nested(BaseModel):
    panel: _Panel
    panels: list[_Panel] = Field(default_factory=list)
    by_region: dict[str, MemberId] = Field(default_factory=dict)


def test_refs_into_defs_lists_of_models_and_maps_are_followed() -> None:
    schema = _Nested.model_json_schema()
    assert "$defs" in schema  # the nested model is reached through a $ref
    data = {
        "panel": {"chair": "c0", "members": ["m0"], "topic": "t"},
        "panels": [{"chair": "c1", "members": ["m1", "m2"], "topic": "t"}],
        "by_region": {"eu": "r1"},
    }
    assert _found(_Nested, data) == [
        ("input.panel.chair", "c0", ()),
        ("input.panel.members.0", "m0", ("panel",)),
        ("input.panels.0.chair", "c1", ()),
        ("input.panels.0.members.0", "m1", ("panel",)),
        ("input.panels.0.members.1", "m2", ("panel",)),
        ("input.by_region.eu", "r1", ()),
    ]
    marked = named_approvers(schema, data)
    assert marked[1].marked_field == "input.panel.members"


class _ByPerson(BaseModel):
    kind: Literal["person"]
    who: MemberId


class _ByRole(BaseModel):
    kind: Literal["role"]
    who: str  # a role name: not a member id


class _Choice(BaseModel):
    route: _ByPerson | _ByRole = Field(discriminator="kind")


def test_only_the_union_branch_the_value_takes_marks_it() -> None:
    assert _found(_Choice, {"route": {"kind": "person", "who": "u1"}}) == [
        ("input.route.who", "u1", ())
    ]
    assert _found(_Choice, {"route": {"kind": "role", "who": "approver"}}) == []


def test_a_mark_on_both_branches_of_a_union_requires_both_groups() -> None:
    schema = {
        "type": "object",
        "properties": {
            "x": {
                "anyOf": [
                    {"type": "string", "x-blocks-approver": {"group": "a"}},
                    {"type": "string", "maxLength": 3, "x-blocks-approver": {"group": "b"}},
                    {"type": "integer", "x-blocks-approver": {"group": "never"}},
                ]
            }
        },
    }
    assert [(n.field, n.groups) for n in named_approvers(schema, {"x": "abc"})] == [
        ("input.x", ("a", "b"))
    ]


def test_a_schema_that_refers_to_itself_ends() -> None:
    loop: dict[str, Any] = {"$ref": "#", "x-blocks-approver": {}}
    assert named_approvers(loop, "u1") == [NamedApprover("input", "u1", (), "input")]
    branching: dict[str, Any] = {
        "$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/A"}]}},
        "$ref": "#/$defs/A",
    }
    assert named_approvers(branching, {"a": "b"}) == []


class _Tree(BaseModel):
    owner: MemberId
    children: list[_Tree] = Field(default_factory=list)


def test_a_recursive_model_is_walked_as_deep_as_the_input_goes() -> None:
    data = {"owner": "a", "children": [{"owner": "b", "children": [{"owner": "c"}]}]}
    assert [n.field for n in named_approvers(_Tree.model_json_schema(), data)] == [
        "input.owner",
        "input.children.0.owner",
        "input.children.0.children.0.owner",
    ]


# --- what becomes of a step whose named approvers no longer count ---------------------------


def test_a_member_who_no_longer_counts_leaves_the_rest_to_decide() -> None:
    policy = ApprovalPolicy(
        (
            ApproverGroup("finance", ("a", "b", "c"), required=2),
            ApproverGroup("legal", ("l",), roles=("admin",)),
        )
    )
    left = without_members(policy, None, OnBreach(), {"a", "l"})
    assert left.policy is not None
    assert [g.user_ids for g in left.policy.groups] == [("b", "c"), ()]
    assert left.policy.groups[1].roles == ("admin",)  # a role still fills the legal seat
    assert not left.escalated
    assert policy.named_users() == ("a", "b", "c", "l")


def test_a_policy_nobody_can_satisfy_escalates_now_or_closes() -> None:
    director = ApprovalPolicy.any_of(users=["d"])
    assert director.without_users({"d"}) is None
    closed = without_members(director, None, OnBreach(), {"d"})
    assert closed.policy is None
    assert not closed.escalated

    finance = ApprovalPolicy((ApproverGroup("finance", ("a", "b"), required=2),))
    escalation = Escalation(before=timedelta(hours=4), users=("boss", "gone"))
    widened = without_members(finance, escalation, OnBreach(), {"b", "gone"})
    assert widened.escalated
    assert widened.escalation is None
    assert widened.policy is not None
    assert widened.policy.groups[0].user_ids == ("a", "boss")

    # An escalation whose people are all gone is no escalation; nor is an escalating breach.
    nobody = without_members(
        finance,
        Escalation(before=timedelta(hours=4), users=("b",)),
        OnBreach(BreachAction.ESCALATE, users=("b",), extend=timedelta(hours=1)),
        {"b"},
    )
    assert nobody.policy is None
    assert nobody.escalation is None
    assert nobody.on_breach.action is BreachAction.EXPIRE

    handed_over = without_members(
        director,
        Escalation(before=timedelta(hours=1), roles=("admin",), replace=True),
        OnBreach(),
        {"d"},
    )
    assert handed_over.escalated
    assert handed_over.reassigned
    assert handed_over.policy is not None
    assert handed_over.policy.labels() == ["role:admin"]


def test_only_canonical_member_ids_are_ids() -> None:
    value = "5d2c8f1a-9b3e-4c7d-8e6f-1a2b3c4d5e6f"
    assert str(member_uuid(value)) == value
    assert member_uuid(value.upper()) is None  # a policy compares ids as text
    assert member_uuid(value.replace("-", "")) is None
    assert member_uuid("alice") is None

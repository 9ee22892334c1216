"""Console forms generated from a published JSON Schema, and posted strings typed back."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from jinja2 import Environment
from pydantic import BaseModel, EmailStr, Field

from blocks.api.console.pages import environment
from blocks.api.console.runs.schema_forms import FIELD_PREFIX, form_fields, parse_form
from blocks.workflows.catalogue import schema_errors


class Priority(StrEnum):
    LOW = "low"
    HIGH = "high"


class SignOff(BaseModel):
    """A decision form as an author writes it: pydantic's schema is what workers publish."""

    budget_code: str = Field(max_length=12, description="Two letters, a dash, four digits")
    reason: str | None = Field(default=None, max_length=2000)
    amount: float = Field(ge=0, le=10_000)
    seats: int | None = None
    urgent: bool = False
    priority: Priority = Priority.LOW
    level: Literal[1, 2, 3] = 1
    contact: EmailStr | None = None
    due: str | None = Field(default=None, json_schema_extra={"format": "date"})


SCHEMA = SignOff.model_json_schema()


def _posted(**values: str) -> dict[str, str]:
    return {f"{FIELD_PREFIX}{name}": value for name, value in values.items()}


def test_every_property_becomes_a_field_of_the_right_kind() -> None:
    fields = {f.name: f for f in form_fields(SCHEMA)}
    assert list(fields) == list(SCHEMA["properties"])
    assert fields["budget_code"].kind == "text"
    assert fields["budget_code"].required is True
    assert fields["budget_code"].max_length == 12
    assert fields["budget_code"].help == "Two letters, a dash, four digits"
    assert fields["budget_code"].label == "Budget Code"
    assert fields["reason"].kind == "textarea"
    assert fields["reason"].required is False
    assert (fields["amount"].kind, fields["amount"].minimum, fields["amount"].maximum) == (
        "number",
        0,
        10_000,
    )
    assert (fields["amount"].step, fields["seats"].step) == ("any", "1")
    assert fields["urgent"].kind == "checkbox"
    # An enum behind a $ref, and a Literal of numbers: selects with their defaults shown.
    assert (fields["priority"].kind, fields["priority"].options) == ("select", ("low", "high"))
    assert fields["priority"].value == "low"
    assert (fields["level"].kind, fields["level"].options, fields["level"].value) == (
        "select",
        ("1", "2", "3"),
        "1",
    )
    assert fields["contact"].kind == "email"
    assert fields["due"].kind == "date"


def test_posted_strings_come_back_typed_and_pass_the_schema() -> None:
    form = _posted(
        budget_code="FI-2024", amount="12.5", seats="3", urgent="on", priority="high", level="2"
    )
    form["comment"] = "not a schema field"
    values = parse_form(SCHEMA, form)
    assert values == {
        "budget_code": "FI-2024",
        "amount": 12.5,
        "seats": 3,
        "urgent": True,
        "priority": "high",
        "level": 2,
    }
    assert schema_errors(SCHEMA, values) == []


def test_empty_optional_fields_are_omitted_and_unchecked_boxes_are_false() -> None:
    values = parse_form(SCHEMA, _posted(budget_code="FI-2024", amount="0", reason="  ", due=""))
    assert values == {"budget_code": "FI-2024", "amount": 0, "urgent": False}


def test_what_does_not_parse_stays_text_for_the_api_to_refuse() -> None:
    values = parse_form(SCHEMA, _posted(amount="twelve", seats="2.5", level="9", budget_code=""))
    assert values["amount"] == "twelve"
    assert values["seats"] == "2.5"
    assert values["level"] == "9"
    assert "budget_code" not in values  # required and empty: the API says it is missing
    reasons = {e["field"] for e in schema_errors(SCHEMA, values)}
    assert {"input.amount", "input.seats", "input.level", "input.budget_code"} <= reasons
    assert parse_form(SCHEMA, _posted(amount="nan"))["amount"] == "nan"


def test_a_posted_form_and_its_errors_are_shown_again() -> None:
    fields = {
        f.name: f
        for f in form_fields(
            SCHEMA,
            _posted(budget_code="bad", urgent="on"),
            {"form.budget_code": "does not match the pattern"},
        )
    }
    assert fields["budget_code"].value == "bad"
    assert fields["budget_code"].error == "does not match the pattern"
    assert fields["urgent"].value == "on"
    assert fields["amount"].error is None


def test_hand_written_schemas_of_the_subset() -> None:
    schema = {
        "type": "object",
        "properties": {
            "amount": {"anyOf": [{"type": "string"}, {"type": "number", "minimum": 1}]},
            "tags": {"type": ["array", "null"], "default": ["a"]},
            "note": {"type": "string"},
        },
        "required": ["amount"],
    }
    fields = {f.name: f for f in form_fields(schema)}
    assert (fields["amount"].kind, fields["amount"].minimum) == ("number", 1)
    assert (fields["tags"].kind, fields["tags"].json, fields["tags"].value) == (
        "textarea",
        True,
        '["a"]',
    )
    assert fields["note"].label == "Note"
    assert parse_form(schema, _posted(amount="7", tags='["x", "y"]', note="hi")) == {
        "amount": 7,
        "tags": ["x", "y"],
        "note": "hi",
    }
    assert form_fields(None) == []
    assert form_fields({}) == []
    assert parse_form(None, _posted(amount="1")) == {}


def test_the_partial_labels_every_input_and_escapes_every_value() -> None:
    hostile = '"><script>alert(1)</script>'
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "title": hostile, "description": hostile},
            "kind": {"enum": [hostile, "plain"]},
            "ok": {"type": "boolean"},
        },
        "required": ["code"],
    }
    fields = form_fields(schema, _posted(code=hostile), {"code": hostile})
    assert isinstance(environment, Environment)
    html = environment.get_template("schema_fields.html").render(fields=fields)
    assert "<script>" not in html
    for field in fields:
        assert f'<label for="{field.input_id}">' in html
        assert f'id="{field.input_id}"' in html
        assert f'name="{field.input_name}"' in html
    assert 'aria-describedby="field-code-help field-code-error"' in html
    assert 'aria-invalid="true"' in html
    assert 'id="field-code-error" class="field-error"' in html

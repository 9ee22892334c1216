"""HTML form fields from the JSON Schema a workflow publishes (a run's input, a step's decision
form), and the posted strings turned back into typed values for the API to validate.

The subset our workflows publish (pydantic's `model_json_schema`): an object whose properties are
strings (maxLength, enum, format email/date), integers and numbers (minimum/maximum), booleans,
with `required`, `title` and `description`; `$ref` into `$defs` (enums) and `anyOf` with null
(optional fields) are followed. Nothing here validates: a value that does not parse stays the
string that was typed, so the API's own JSON Schema check refuses it with its own message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

FieldKind = Literal["text", "textarea", "number", "checkbox", "select", "email", "date"]

# The HTML `name` of each schema field carries this prefix, so a property called `comment` or
# `decision` never collides with the page's own fields.
FIELD_PREFIX = "field."

# A string allowed to be longer than this gets a textarea rather than a one-line input.
_TEXTAREA_FROM = 200


@dataclass(frozen=True)
class FormField:
    """One input of a generated form; `value` is the text to show in it (what was posted, or the
    schema's default), `error` the refusal's reason for this field when the page is re-rendered."""

    name: str
    label: str
    kind: FieldKind
    required: bool
    options: tuple[str, ...] = ()
    help: str | None = None
    value: str = ""
    error: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    step: str | None = None
    # Arrays and objects (outside the subset) are typed as JSON text in a textarea.
    json: bool = False

    @property
    def input_name(self) -> str:
        return f"{FIELD_PREFIX}{self.name}"

    @property
    def input_id(self) -> str:
        return f"field-{self.name}"


def form_fields(
    schema: Mapping[str, Any] | None,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[FormField]:
    """The fields of `schema`, in its order. `values` is a posted form (as `read_form` gives it)
    to show again; `errors` maps a field to its reason, keyed by the field's name or by any
    dotted path ending in it (`form.budget_code`, `input.amount`, as the API names them)."""
    if not schema:
        return []
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    fields: list[FormField] = []
    for name, raw in properties.items():
        prop = _resolve(schema, raw)
        fields.append(
            _field(
                name,
                prop,
                required=name in required,
                posted=values,
                error=_error_for(name, errors),
            )
        )
    return fields


def parse_form(schema: Mapping[str, Any] | None, form: Mapping[str, str]) -> dict[str, Any]:
    """The posted `form` as the JSON object `schema` describes: numbers as numbers, booleans from
    checkboxes, enum options as their own values. An empty field is left out (a required one is
    then refused by the API as missing); text that is not a number stays text."""
    out: dict[str, Any] = {}
    for field in form_fields(schema):
        raw = form.get(field.input_name)
        if field.kind == "checkbox":
            out[field.name] = raw is not None and raw not in ("", "false", "off")
            continue
        if raw is None or raw.strip() == "":
            continue
        out[field.name] = _typed(schema or {}, field, raw)
    return out


def _resolve(root: Mapping[str, Any], prop: Any) -> dict[str, Any]:
    """A property with its local `$ref` followed and an optional `anyOf [X, null]` unwrapped;
    the outer title, description and default win over the referenced ones."""
    if not isinstance(prop, Mapping):
        return {}
    resolved = dict(prop)
    seen = 0
    while isinstance(resolved.get("$ref"), str) and seen < 10:
        target = _definition(root, resolved.pop("$ref"))
        resolved = {**target, **resolved}
        seen += 1
    for key in ("anyOf", "oneOf"):
        variants = resolved.get(key)
        if isinstance(variants, list):
            usable = [_resolve(root, v) for v in variants]
            usable = [v for v in usable if v.get("type") != "null"]
            if usable:
                chosen = _preferred(usable)
                outer = {k: v for k, v in resolved.items() if k not in ("anyOf", "oneOf")}
                resolved = {**chosen, **outer}
    kind = resolved.get("type")
    if isinstance(kind, list):
        types = [t for t in kind if t != "null"]
        resolved["type"] = types[0] if types else "string"
    return resolved


def _preferred(variants: list[dict[str, Any]]) -> dict[str, Any]:
    # `number | string` (an amount typed as "12.50") gets the number input; a value that is not
    # a number still goes back as the text typed.
    for variant in variants:
        if variant.get("type") in ("number", "integer"):
            return variant
    return variants[0]


def _definition(root: Mapping[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return {}
        node = node[part]
    return dict(node) if isinstance(node, Mapping) else {}


def _field(
    name: str,
    prop: dict[str, Any],
    *,
    required: bool,
    posted: Mapping[str, str] | None,
    error: str | None,
) -> FormField:
    kind_of = prop.get("type")
    label = str(prop.get("title") or name.replace("_", " ").capitalize())
    help_text = str(prop["description"]) if prop.get("description") else None
    common: dict[str, Any] = {
        "name": name,
        "label": label,
        "required": required,
        "help": help_text,
        "error": error,
    }
    default = prop.get("default")
    posted_value = posted.get(f"{FIELD_PREFIX}{name}") if posted is not None else None
    if isinstance(prop.get("enum"), list):
        options = tuple(_option_text(v) for v in prop["enum"])
        shown = posted_value if posted_value is not None else _text(default)
        return FormField(kind="select", options=options, value=shown, **common)
    if kind_of == "boolean":
        if posted is not None:
            checked = posted_value not in (None, "", "false", "off")
        else:
            checked = default is True
        return FormField(kind="checkbox", value="on" if checked else "", **common)
    shown = posted_value if posted_value is not None else _text(default)
    if kind_of in ("integer", "number"):
        return FormField(
            kind="number",
            value=shown,
            minimum=_number(prop.get("minimum")),
            maximum=_number(prop.get("maximum")),
            step="1" if kind_of == "integer" else "any",
            **common,
        )
    if kind_of in ("array", "object"):
        if posted_value is None and default is not None:
            shown = json.dumps(default)
        return FormField(kind="textarea", value=shown, json=True, **common)
    max_length = prop.get("maxLength") if isinstance(prop.get("maxLength"), int) else None
    fmt = prop.get("format")
    kind: FieldKind = "text"
    if fmt == "email":
        kind = "email"
    elif fmt == "date":
        kind = "date"
    elif max_length is not None and max_length > _TEXTAREA_FROM:
        kind = "textarea"
    return FormField(kind=kind, value=shown, max_length=max_length, **common)


def _typed(schema: Mapping[str, Any], field: FormField, raw: str) -> Any:
    if field.kind == "select":
        prop = _resolve(schema, (schema.get("properties") or {}).get(field.name))
        for option in prop.get("enum") or ():
            if _option_text(option) == raw:
                return option
        return raw
    if field.kind == "number":
        return _as_number(raw, integer=field.step == "1")
    if field.json:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _as_number(raw: str, *, integer: bool) -> int | float | str:
    text = raw.strip()
    try:
        return int(text)
    except ValueError:
        pass
    if integer:
        return raw  # "2.5" for an integer: the API says it is not one
    try:
        number = float(text)
    except ValueError:
        return raw
    return number if math.isfinite(number) else raw


def _error_for(name: str, errors: Mapping[str, str] | None) -> str | None:
    if not errors:
        return None
    if name in errors:
        return errors[name]
    for key, reason in errors.items():
        if key.endswith(f".{name}"):
            return reason
    return None


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None

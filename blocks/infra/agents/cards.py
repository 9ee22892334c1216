"""A2A v1.0 agent cards checked through the a2a-sdk's own types (`a2a.types.AgentCard`, protobuf).

`parse_card(card)` is what registration calls: `google.protobuf.json_format.ParseDict` into the
SDK's AgentCard refuses unknown fields and wrong types (the refusal is traced down to the field
that caused it, so the error names `card.skills[0].tags`, not just the card); then every field
the proto marks `REQUIRED` (`google.api.field_behavior`, as the A2A spec does) must be set, a
repeated one with at least one item; then the rules the proto cannot say
(`blocks.core.agents.cards`). The answer is the card as the SDK writes it back
(`MessageToDict`: camelCase, nothing unknown), which is what Blocks stores and serves.

This lives in `infra`, not `core`: importing `a2a.types` loads the SDK's utilities (starlette,
anyio), which `core` (importable in the workflow sandbox) must not.
"""

from __future__ import annotations

import json
from typing import Any

from a2a.types import AgentCard
from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from blocks.core.agents.cards import CardError, check_card_rules

# A card is a description, not a payload: larger is refused before it is parsed.
MAX_CARD_BYTES = 64 * 1024
_ROOT = "card"


def parse_card(card: Any) -> dict[str, Any]:
    """The card as the SDK writes it, or CardError naming the field and why."""
    if not isinstance(card, dict):
        raise CardError(_ROOT, "must be a JSON object")
    size = len(json.dumps(card, ensure_ascii=False).encode())
    if size > MAX_CARD_BYTES:
        raise CardError(_ROOT, f"is {size} bytes; at most {MAX_CARD_BYTES}")
    message = AgentCard()
    try:
        ParseDict(card, message)
    except ParseError as refused:
        field, reason = _refused_field(card, AgentCard.DESCRIPTOR, _ROOT, refused)
        raise CardError(field, reason) from None
    missing = _missing(message, _ROOT)
    if missing is not None:
        raise CardError(*missing)
    normalized: dict[str, Any] = MessageToDict(message)
    check_card_rules(normalized)
    return normalized


def sdk_card(card: dict[str, Any]) -> AgentCard:
    """A stored (checked) card as the SDK's message."""
    return ParseDict(card, AgentCard())


# --- where the SDK refused ---------------------------------------------------------------------


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0].rstrip(".") if str(error) else "refused by the A2A types"


def _json_names(descriptor: Descriptor) -> list[str]:
    return [f.json_name for f in descriptor.fields]


def _field_by_key(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    for field in descriptor.fields:
        if key in (field.json_name, field.name):
            return field
    return None


def _parses(descriptor: Descriptor, value: dict[str, Any]) -> bool:
    try:
        ParseDict(value, GetMessageClass(descriptor)())
    except ParseError:
        return False
    return True


def _is_message(field: FieldDescriptor) -> bool:
    return field.message_type is not None and not field.message_type.full_name.startswith(
        "google.protobuf."
    )


def _expected(field: FieldDescriptor) -> str:
    """What a field's value must be, in words."""
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            return "must be an object"
        return "must be a list of objects" if field.is_repeated else "must be an object"
    kind = {
        FieldDescriptor.CPPTYPE_STRING: "string",
        FieldDescriptor.CPPTYPE_BOOL: "boolean (true or false)",
    }.get(field.cpp_type, "number")
    return f"must be a list of {kind} values" if field.is_repeated else f"must be a {kind}"


def _refused_field(
    value: Any, descriptor: Descriptor, path: str, refused: ParseError
) -> tuple[str, str]:
    """The innermost field under `path` that the SDK's types refuse, and why."""
    if not isinstance(value, dict):
        return path, "must be an object"
    for key, item in value.items():
        where = f"{path}.{key}"
        field = _field_by_key(descriptor, key)
        if field is None:
            known = ", ".join(_json_names(descriptor))
            return where, f"is not a field of the A2A v1.0 {descriptor.name} ({known})"
        if item is None or _parses(descriptor, {key: item}):
            continue
        if not _is_message(field):
            return where, _expected(field)
        entry = field.message_type
        if entry.GetOptions().map_entry:
            if not isinstance(item, dict):
                return where, "must be an object"
            target = entry.fields_by_name["value"]
            for name, sub in item.items():
                if _parses(descriptor, {key: {name: sub}}):
                    continue
                if not _is_message(target):
                    return f"{where}.{name}", _expected(target)
                return _refused_field(sub, target.message_type, f"{where}.{name}", refused)
            return where, _first_line(refused)
        if field.is_repeated:
            if not isinstance(item, list):
                return where, "must be a list"
            for index, element in enumerate(item):
                if not _parses(descriptor, {key: [element]}):
                    return _refused_field(element, entry, f"{where}[{index}]", refused)
            return where, _first_line(refused)
        return _refused_field(item, entry, where, refused)
    # Nothing below refuses on its own: the message as a whole does (e.g. two types of a oneof).
    try:
        ParseDict(value, GetMessageClass(descriptor)())
    except ParseError as own:
        return path, _first_line(own)
    return path, _first_line(refused)


# --- REQUIRED fields ---------------------------------------------------------------------------


def _required(field: FieldDescriptor) -> bool:
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.FieldBehavior.REQUIRED in behaviors


def _missing(message: Message, path: str) -> tuple[str, str] | None:
    """The first REQUIRED field left out (or empty) anywhere in `message`, and why."""
    for field in message.DESCRIPTOR.fields:
        where = f"{path}.{field.json_name}"
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = field.message_type.fields_by_name["value"]
            if target.message_type is not None and _is_message(target):
                for name in sorted(value):
                    found = _missing(value[name], f"{where}.{name}")
                    if found is not None:
                        return found
            continue
        if field.is_repeated:
            if _required(field) and not value:
                return where, "is required: at least one"
            if _is_message(field):
                for index, item in enumerate(value):
                    found = _missing(item, f"{where}[{index}]")
                    if found is not None:
                        return found
            elif field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
                for index, item in enumerate(value):
                    if not item.strip():
                        return f"{where}[{index}]", "must not be empty"
            continue
        if field.message_type is not None:
            if message.HasField(field.name):
                if _is_message(field):
                    found = _missing(value, where)
                    if found is not None:
                        return found
            elif _required(field):
                return where, "is required"
            continue
        if (
            _required(field)
            and field.cpp_type == FieldDescriptor.CPPTYPE_STRING
            and not value.strip()
        ):
            return where, "is required"
    return None

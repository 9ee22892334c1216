"""Describe a workflow class as the catalogue entry its worker publishes, and check an input
against the schema it publishes (what the API and the authoring kit both ask; no I/O here)."""

from __future__ import annotations

import inspect
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from temporalio import workflow

from blocks.core.approvals.catalogue import CatalogueEntry
from blocks.workflows.sdk import BlocksWorkflow

# Errors reported for one input, at most: enough to fix it, bounded for a hostile one.
MAX_INPUT_ERRORS = 20

# A workflow that declares no INPUT takes any JSON object (its code validates what it reads).
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def workflow_name(cls: type) -> str:
    """The name Temporal knows the class by (`@workflow.defn(name=...)`, else the class name)."""
    definition = workflow._Definition.from_class(cls)
    if definition is None or definition.name is None:
        raise TypeError(f"{cls.__qualname__} is not decorated with @workflow.defn(name=...)")
    return definition.name


def describe(cls: type[BlocksWorkflow], *, task_queue: str) -> CatalogueEntry:
    return CatalogueEntry(
        name=workflow_name(cls),
        version=str(cls.VERSION),
        description=cls.DESCRIPTION or _first_paragraph(inspect.getdoc(cls)),
        task_queue=task_queue,
        input_schema=cls.INPUT.model_json_schema() if cls.INPUT is not None else _ANY_OBJECT,
        forms={step: form.model_json_schema() for step, form in cls.FORMS.items()},
    )


def _first_paragraph(doc: str | None) -> str:
    if not doc or doc == inspect.getdoc(BlocksWorkflow):
        return ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def schema_errors(schema: dict[str, Any], instance: Any) -> list[dict[str, str]]:
    """What is wrong with `instance` under `schema`, as `input.<path>` fields and reasons.

    A missing or unexpected field is named as the field itself (`input.amount`), not its parent.
    """
    validator = Draft202012Validator(schema)
    found: list[dict[str, str]] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path))):
        at = ["input", *(str(p) for p in error.absolute_path)]
        if error.validator == "required" and isinstance(error.instance, dict):
            found += [
                {"field": ".".join([*at, name]), "reason": "a required field is missing"}
                for name in error.validator_value
                if name not in error.instance
            ]
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set((error.schema or {}).get("properties", {}))
            found += [
                {"field": ".".join([*at, name]), "reason": "unexpected field"}
                for name in sorted(error.instance)
                if name not in allowed
            ]
        else:
            found.append({"field": ".".join(at), "reason": _reason(error)})
    return found[:MAX_INPUT_ERRORS]


def _reason(error: SchemaError) -> str:
    """The rule broken; jsonschema's own message quotes the value, which a reason never echoes."""
    value = error.validator_value
    rules = {
        "type": f"must be of type {value}",
        "minLength": f"must have at least {value} characters",
        "maxLength": f"must have at most {value} characters",
        "minItems": f"must have at least {value} items",
        "maxItems": f"must have at most {value} items",
        "uniqueItems": "items must be unique",
        "pattern": f"must match {value}",
        "minimum": f"must be at least {value}",
        "maximum": f"must be at most {value}",
        "exclusiveMinimum": f"must be greater than {value}",
        "exclusiveMaximum": f"must be less than {value}",
        "multipleOf": f"must be a multiple of {value}",
        "enum": f"must be one of {value}",
        "const": f"must be {value!r}",
        "anyOf": "matches none of the allowed forms",
        "oneOf": "must match exactly one of the allowed forms",
        "format": f"must be a valid {value}",
    }
    if error.validator in ("anyOf", "oneOf") and error.context:
        # Name what each allowed form asks, e.g. "must be of type number, or must match ^...$".
        branches: dict[int, str] = {}
        for sub in error.context:
            index = sub.schema_path[0] if sub.schema_path else 0
            branches.setdefault(int(index), _reason(sub))
        forms = list(dict.fromkeys(branches[i] for i in sorted(branches)))
        return f"matches no allowed form: {', or '.join(forms)}"
    return rules.get(str(error.validator), f"fails the rule {error.validator}")

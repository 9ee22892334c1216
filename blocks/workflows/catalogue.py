"""Describe a workflow class as the catalogue entry its worker publishes (no I/O here)."""

from __future__ import annotations

import inspect
from typing import Any

from temporalio import workflow

from blocks.core.approvals.catalogue import CatalogueEntry
from blocks.workflows.sdk import BlocksWorkflow

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

"""Load the workflows a worker serves from the author's own modules (`--workflows PKG`).

A package counts with every module inside it. Every `BlocksWorkflow` subclass a module defines (or imports into its namespace, as a package's
`__init__` does) and decorates with `@workflow.defn` is served, and so is every module-level
function decorated with `@activity.defn` (the author's own activities). A module that does not import,
a module that defines no workflow, or two classes claiming one name stop the worker at start,
naming the module and the cause: a worker that silently serves less than asked is worse.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from temporalio import activity

from blocks.workflows.access_review import AccessReviewWorkflow, ScheduledAccessReviewWorkflow
from blocks.workflows.catalogue import workflow_name
from blocks.workflows.checkpoints import AuditCheckpointWorkflow, OrgCheckpointWorkflow
from blocks.workflows.event_stream import EventStreamWorkflow, WebhookDeliveryWorkflow
from blocks.workflows.sdk import BlocksWorkflow

# Blocks' own workflows, served by every worker; organizations cannot start them.
SYSTEM_WORKFLOWS: tuple[type, ...] = (
    AuditCheckpointWorkflow,
    OrgCheckpointWorkflow,
    AccessReviewWorkflow,
    ScheduledAccessReviewWorkflow,
    EventStreamWorkflow,
    WebhookDeliveryWorkflow,
)


class WorkflowLoadError(Exception):
    """A workflow module could not be served; the message names the module and the cause."""


@dataclass(frozen=True)
class AuthorCode:
    """What the author modules give a worker to serve."""

    workflows: list[type[BlocksWorkflow]] = field(default_factory=list)
    activities: list[Callable[..., Any]] = field(default_factory=list)


def load_workflows(modules: Iterable[str]) -> list[type[BlocksWorkflow]]:
    """The author workflows of `modules`, in the order found; raises WorkflowLoadError."""
    return load_author_code(modules).workflows


def load_author_code(modules: Iterable[str]) -> AuthorCode:
    """The workflows and activities of `modules`; raises WorkflowLoadError."""
    found: dict[str, tuple[type[BlocksWorkflow], str]] = {}
    activities: dict[str, Callable[..., Any]] = {}
    reserved = {workflow_name(cls) for cls in SYSTEM_WORKFLOWS}
    for module_name in dict.fromkeys(m.strip() for m in modules if m.strip()):
        found_modules = _import_with_submodules(module_name)
        classes = [
            value
            for module in found_modules
            for _, value in inspect.getmembers(module, inspect.isclass)
            if issubclass(value, BlocksWorkflow) and value is not BlocksWorkflow
        ]
        served = 0
        for cls in classes:
            try:
                name = workflow_name(cls)
            except TypeError:
                continue  # an abstract base of the author's, not a workflow
            if name in reserved:
                raise WorkflowLoadError(
                    f"workflow module {module_name!r}: {cls.__qualname__} takes the name"
                    f" {name!r}, which Blocks reserves for its own workflow"
                )
            earlier = found.get(name)
            if earlier is not None and earlier[0] is not cls:
                raise WorkflowLoadError(
                    f"workflow module {module_name!r}: two workflows are named {name!r}:"
                    f" {_where(earlier[0])} and {_where(cls)}"
                )
            found[name] = (cls, module_name)
            served += 1
        for _, value in (
            m for module in found_modules for m in inspect.getmembers(module, callable)
        ):
            definition = activity._Definition.from_callable(value)
            if definition is None or inspect.isclass(value) or definition.name is None:
                continue
            if definition.name.startswith("blocks."):
                continue  # Blocks' own activities (imported by the module), registered anyway
            earlier_activity = activities.get(definition.name)
            if earlier_activity is not None and earlier_activity is not value:
                raise WorkflowLoadError(
                    f"workflow module {module_name!r}: two activities are named"
                    f" {definition.name!r}: {_where(earlier_activity)} and {_where(value)}"
                )
            activities[definition.name] = value
        if served == 0:
            raise WorkflowLoadError(
                f"workflow module {module_name!r} defines no BlocksWorkflow subclass decorated"
                " with @workflow.defn"
            )
    return AuthorCode([cls for cls, _ in found.values()], list(activities.values()))


def _import_with_submodules(name: str) -> list[ModuleType]:
    """The module `name` and, when it is a package, every module inside it (a package's
    `__init__` need not import its workflows, so a run's sandbox loads only its own module)."""
    module = _import(name, name)
    found = [module]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{name}."):
            found.append(_import(info.name, name))
    return found


def _import(module_name: str, given: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as err:  # any failure of the author's code is reported, not raised raw
        where = module_name if module_name == given else f"{module_name} (in {given})"
        raise WorkflowLoadError(
            f"workflow module {where!r} failed to import: {type(err).__name__}: {err}"
        ) from err


def _where(cls: Any) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"

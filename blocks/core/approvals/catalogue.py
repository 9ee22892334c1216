"""What a worker publishes about each workflow it serves, and the marks its input schema carries.

The API never imports an author's workflow: it knows a workflow by this entry, which the worker
writes to PostgreSQL at start. `APPROVER_MARK` is the JSON Schema keyword that marks an input
field as a member id naming an approver, so the API can check those members on the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# On a string (or an array of strings) in an input schema: the value names approvers by member id.
# Its value is an object; `{"group": "finance"}` also requires membership of that member group.
APPROVER_MARK = "x-blocks-approver"


@dataclass(frozen=True)
class CatalogueEntry:
    """One workflow as a worker serves it: enough to list it, validate a start and route it."""

    name: str
    version: str
    description: str
    task_queue: str
    input_schema: dict[str, Any]
    # step id -> the JSON Schema of the form each decision of that step must carry
    forms: dict[str, dict[str, Any]] = field(default_factory=dict)

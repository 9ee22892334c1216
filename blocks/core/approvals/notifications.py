"""What approvers are told about a step, as plain data every notification channel renders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class NoticeKind(StrEnum):
    OPENED = "opened"
    REMINDER = "reminder"
    ESCALATED = "escalated"


@dataclass(frozen=True)
class StepNotice:
    org_id: str
    run_id: str
    workflow_name: str
    step_id: str
    title: str
    kind: NoticeKind
    approvers: list[str]  # `user:<id>` / `role:<name>` labels of who may decide now
    deadline: datetime | None
    # Deterministic per run, step and occasion, so a retried delivery can be recognised.
    notice_id: str

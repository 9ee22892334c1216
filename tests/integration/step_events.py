"""Audit events of approval steps as the SDK writes them (blocks/workflows/sdk.py, step_timers.py),
for tests of the pending-steps projection that append them directly."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def workflow_ctx(org_id: uuid.UUID) -> OrgContext:
    """The context the audit activity appends a run's events in."""
    return OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)


def policy(users: Sequence[str] = (), roles: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": "approvers",
                "users": list(users),
                "roles": list(roles),
                "member_groups": [],
                "required": 2,
            }
        ],
        "rejection": "first",
        "rejections_required": 1,
    }


@dataclass
class StepRun:
    """A run's events as the SDK writes them, with its deterministic ids."""

    requester: str | None
    workflow: str = "tests_projection"
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def _event(self, key: str, action: str, step: str | None = None, **fields: Any) -> AuditRecord:
        workflow_id = f"run-{self.run_id}"
        actor_type = fields.pop("actor_type", ActorType.WORKFLOW)
        return AuditRecord(
            action=action,
            actor_type=actor_type,
            actor_id=fields.pop("actor_id", workflow_id),
            target_type="step" if step else "run",
            target_id=step or self.run_id,
            run_id=self.run_id,
            data=fields,
            event_id=str(workflow_event_id(workflow_id, key)),
        )

    def started(self) -> AuditRecord:
        return self._event(
            "run:started",
            "run.started",
            actor_type=ActorType.USER if self.requester else ActorType.SYSTEM,
            actor_id=self.requester,
            workflow=self.workflow,
            workflow_version="1",
        )

    def opened(
        self,
        step: str,
        policy: dict[str, Any],
        *,
        at: datetime = T0,
        due: datetime | None = None,
        legacy: bool = False,
        untitled: bool = False,
    ) -> AuditRecord:
        """`legacy`: as written before migration 0016 (no workflow, no requester); `untitled`:
        no title (run content, which a database before 0017 has no key to seal)."""
        named = {} if legacy else {"workflow": self.workflow, "requested_by": self.requester}
        return self._event(
            f"step:{step}:opened",
            "step.opened",
            step,
            title=None if untitled else f"Step {step}",
            policy=policy,
            opened_at=at.isoformat(),
            deadline=due.isoformat() if due else None,
            sla_seconds=None,
            business_hours=False,
            **named,
        )

    def decided(
        self, step: str, actor: str, *, state: str = "pending", on_behalf_of: str | None = None
    ) -> AuditRecord:
        return self._event(
            f"step:{step}:vote:{on_behalf_of or actor}",
            "step.decided",
            step,
            actor_type=ActorType.USER,
            actor_id=actor,
            decision="approve",
            on_behalf_of=on_behalf_of,
            step_state=state,
        )

    def closed(self, step: str) -> AuditRecord:
        return self._event(f"step:{step}:closed", "step.closed", step, state="cancelled")

    def escalated(self, step: str, labels: list[str], due: datetime | None) -> AuditRecord:
        return self._event(
            f"step:{step}:escalated",
            "step.escalated",
            step,
            approvers_after=labels,
            deadline=due.isoformat() if due else None,
        )

    def completed(self) -> AuditRecord:
        return self._event("run:finished", "run.completed", status="cancelled")

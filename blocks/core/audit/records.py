"""What an audit event says, as plain data shared by the API, activities and workflows."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ActorType(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    WORKFLOW = "workflow"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"
    AGENT = "agent"  # a remote agent, by its token (actor_id: the agent's id)
    SCIM = "scim"  # an identity provider, by its SCIM token (actor_id: the token's id)


class Outcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILURE = "failure"


@dataclass(frozen=True)
class AuditRecord:
    """One event to append. `event_id` is set by workflows (deterministic) so retries dedupe."""

    action: str
    actor_type: ActorType
    actor_id: str | None = None
    actor_email: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    run_id: str | None = None
    outcome: Outcome = Outcome.SUCCESS
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    ip: str | None = None
    user_agent: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class RequestOrigin:
    """Who asked and from where, as the API resolved it, for events a workflow writes on a
    person's behalf (the run's start, a decision): the same fields an API event carries. The
    personal ones (email, address, user agent) are sealed when the event is appended."""

    actor_email: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    credential_type: str | None = None  # how the person signed the request: api_key, session, ...
    credential_id: str | None = None  # which key, session, link or Slack user

    def credential(self) -> dict[str, str | None]:
        return {"type": self.credential_type, "id": self.credential_id}


@dataclass(frozen=True)
class AuditRecorded:
    """What the audit activity answers a workflow: how many events it took, and whether the
    worker that wrote them has a channel to deliver step notices through (no: the workflow starts
    no notice activity, which would only find nothing to do)."""

    count: int
    notices: bool = True


@dataclass(frozen=True)
class AuditBatch:
    """Events a workflow appends in one activity, each with its deterministic id."""

    org_id: str
    records: list[AuditRecord]

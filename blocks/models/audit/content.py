"""Run content in the audit log: which fields are content, sealed on append, revealed on read.

What a run says is sealed in `audit_events.data` under the organization's data key
(`core.audit.sealed_content`): step titles (built from the run's input), decision comments and
forms, the results a workflow finishes with, and what an LLM step recorded. Which fields those
are is decided here by action, on every append path, so events written by any worker version are
sealed alike. The chain hashes the sealed strings; readers with the right to see the content get
it back through `reveal_data`. Once the organization's keys are destroyed the fields read
`[destroyed]` while the chain still verifies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

from cryptography.exceptions import InvalidTag
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit.records import AuditRecord
from blocks.core.audit.sealed_content import (
    event_content_key,
    open_value,
    parse_content,
    seal_value,
)
from blocks.infra.crypto.org_keys import OrgDataKey, OrgKeyUnavailable
from blocks.models.keys.org_keys import (
    DatabaseOrgKeys,
    live_org_key,
    org_key_by_id,
    process_org_keys,
)

# Fields sealed wherever they appear in these actions' data.
_SEALED_FIELDS: Mapping[str, frozenset[str]] = {
    # A step's context is never in the log; its hash is sealed too (a short draft is guessable).
    "step.opened": frozenset({"title", "context_sha256"}),
    "step.decided": frozenset({"comment", "form"}),
}
# Actions whose data is the author's (results, model metadata): everything sealed but these.
_SEALED_EXCEPT: Mapping[str, frozenset[str]] = {
    "run.completed": frozenset({"status", "error_type"}),
    "llm.called": frozenset({"input_tokens", "output_tokens", "latency_ms", "attempts"}),
}
DESTROYED = "[destroyed]"
UNREADABLE = "[unreadable]"


def content_names(action: str, data: Mapping[str, Any]) -> list[str]:
    """The fields of an event's data that are run content (present and not None)."""
    if action in _SEALED_FIELDS:
        names: Iterable[str] = _SEALED_FIELDS[action]
    elif action in _SEALED_EXCEPT:
        names = (name for name in data if name not in _SEALED_EXCEPT[action])
    else:
        return []
    return [name for name in names if data.get(name) is not None]


def has_content(records: Sequence[AuditRecord]) -> bool:
    return any(content_names(record.action, record.data) for record in records)


@dataclass(frozen=True)
class ContentSealer:
    """Seals the content fields of one organization's rows as they are linked into the chain."""

    key: OrgDataKey

    def seal(self, row: dict[str, Any]) -> None:
        names = content_names(row["action"], row["data"])
        if not names:
            return
        event_id: uuid.UUID = row["id"]
        event_key = event_content_key(self.key.secret, self.key.org_id, event_id)
        data = dict(row["data"])  # the record's own dict stays as the workflow sent it
        for name in names:
            if parse_content(data[name]) is None:
                data[name] = seal_value(event_key, self.key.key_id, event_id, name, data[name])
        row["data"] = data


def _source_for(session: AsyncSession) -> DatabaseOrgKeys | None:
    """The process's key source (its keys cached) if it serves this session's database."""
    source = process_org_keys()
    return source if source is not None and source.serves(session) else None


async def content_sealer(session: AsyncSession, org_id: uuid.UUID) -> ContentSealer:
    """The sealer for `org_id`'s appends: its live key from the process's key source (cached),
    or, in a process without one, read in the append's own transaction."""
    source = _source_for(session)
    if source is not None:
        return ContentSealer(await source.active_key(org_id))
    # The append binds its organization in its first statement's round trip; this read comes
    # before it, so it binds explicitly (transaction-local, the same organization).
    await session.exec(  # type: ignore[call-overload]
        text("SELECT set_config('app.org_id', :org_id, true)").bindparams(org_id=str(org_id))
    )
    return ContentSealer(await live_org_key(session, org_id))


class ContentKeys:
    """The organization's keys a read needs, each fetched once; None for a destroyed one."""

    def __init__(self, session: AsyncSession, org_id: uuid.UUID) -> None:
        self._session = session
        self._org_id = org_id
        self._keys: dict[uuid.UUID, OrgDataKey | None] = {}

    async def get(self, key_id: uuid.UUID) -> OrgDataKey | None:
        if key_id not in self._keys:
            source = _source_for(self._session)
            try:
                if source is not None:
                    self._keys[key_id] = await source.key(self._org_id, key_id)
                else:
                    self._keys[key_id] = await org_key_by_id(self._session, self._org_id, key_id)
            except OrgKeyUnavailable:
                self._keys[key_id] = None
        return self._keys[key_id]

    async def reveal(self, event_id: uuid.UUID | None, name: str, value: Any) -> Any:
        """`value` opened if it is sealed content (of `event_id`, when given); else as is."""
        sealed = parse_content(value)
        if sealed is None:
            return value
        if event_id is not None and sealed.event_id != event_id:
            return UNREADABLE  # moved from another event
        key = await self.get(sealed.key_id)
        if key is None:
            return DESTROYED
        try:
            event_key = event_content_key(key.secret, key.org_id, sealed.event_id)
            return open_value(event_key, name, sealed.blob)
        except (InvalidTag, ValueError):
            return UNREADABLE

    async def reveal_data(
        self, event_id: uuid.UUID, data: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """An event's data with its sealed fields opened."""
        if not data:
            return dict(data or {})
        return {name: await self.reveal(event_id, name, value) for name, value in data.items()}


async def reveal_events_data(
    session: AsyncSession,
    org_id: uuid.UUID,
    events: Sequence[tuple[uuid.UUID, Mapping[str, Any] | None]],
) -> list[dict[str, Any]]:
    """Each (event id, data)'s data with its content opened; one key fetch per key."""
    keys = ContentKeys(session, org_id)
    return [await keys.reveal_data(event_id, data) for event_id, data in events]


class _Event(Protocol):
    id: uuid.UUID
    data: dict[str, Any]

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self: ...


E = TypeVar("E", bound=_Event)


async def with_content(session: AsyncSession, org_id: uuid.UUID, events: Sequence[E]) -> list[E]:
    """The events, each with its content opened, as detached copies (the stored rows, and the
    session's objects, stay as they are: the audit log is append-only)."""
    keys = ContentKeys(session, org_id)
    shown: list[E] = []
    for event in events:
        data = event.data or {}
        if any(parse_content(value) is not None for value in data.values()):
            event = event.model_copy(update={"data": await keys.reveal_data(event.id, data)})
        shown.append(event)
    return shown

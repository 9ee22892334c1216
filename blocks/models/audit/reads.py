"""Consistent, paged reads of an organization's audit chain for export, verification and custody.

Every read of one export or verification happens in one REPEATABLE READ, read-only transaction
(`snapshot`) bound to the caller's organization, so the head, the events and the checkpoints
describe the same moment while appends go on; events are read in pages of `PAGE` by seq, or
(the JSON Lines export) from one server-side cursor `BATCH` rows at a time, never all at once.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, Table, Text, bindparam, cast, func, select, text, tuple_
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit.chain import GENESIS_HASH
from blocks.core.audit.chain_verifier import ChainVerifier, VerificationReport
from blocks.core.audit.export_format import (
    Link,
    SignedCheckpoint,
    dumps_line,
    format_signed_at,
    header_line,
    stored_event_lines,
)
from blocks.core.audit.sealed_content import (
    CONTENT_PREFIX,
    content_line,
    event_content_key,
    parse_content,
)
from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.audit.checkpoints import AuditCheckpoint
from blocks.models.audit.content import ContentKeys
from blocks.models.audit.events import AuditEvent, hashed_payload

PAGE = 1000
BATCH = 2000  # rows per FETCH from a server-side cursor: about 2 MB of export per chunk
_EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
_CHECKPOINTS: Table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
_HEAD = text("SELECT seq, hash FROM audit_chain_heads WHERE org_id = :org_id")
_CERTIFIED_BY = text(
    "SELECT e.seq AS event_seq, c.seq, c.signed_at, c.key_id "
    "FROM unnest(CAST(:seqs AS bigint[])) AS e(seq) "
    "LEFT JOIN LATERAL (SELECT seq, signed_at, key_id FROM audit_checkpoints "
    "WHERE org_id = :org_id AND seq >= e.seq ORDER BY seq, signed_at LIMIT 1) c ON true"
).bindparams(bindparam("seqs"), bindparam("org_id"))


@dataclass(frozen=True)
class ExportFilters:
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    actor_id: str | None = None
    action: str | None = None
    run_id: str | None = None

    @property
    def complete(self) -> bool:
        return not any(
            v is not None
            for v in (self.occurred_from, self.occurred_to, self.actor_id, self.action, self.run_id)
        )

    def as_header(self) -> dict[str, str | None]:
        return {
            "from": self.occurred_from.isoformat() if self.occurred_from else None,
            "to": self.occurred_to.isoformat() if self.occurred_to else None,
            "actor_id": self.actor_id,
            "action": self.action,
            "run_id": self.run_id,
        }

    def where(self) -> list[Any]:
        clauses: list[Any] = []
        if self.occurred_from is not None:
            clauses.append(_EVENTS.c.occurred_at >= self.occurred_from)
        if self.occurred_to is not None:
            clauses.append(_EVENTS.c.occurred_at < self.occurred_to)
        if self.actor_id is not None:
            clauses.append(_EVENTS.c.actor_id == self.actor_id)
        if self.action is not None:
            clauses.append(_EVENTS.c.action == self.action)
        if self.run_id is not None:
            clauses.append(_EVENTS.c.run_id == self.run_id)
        return clauses


@asynccontextmanager
async def snapshot(
    ctx: OrgContext, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AsyncSession]:
    """A session of its own (a streamed body outlives the request's session), bound to the
    caller's organization, in one REPEATABLE READ read-only transaction."""
    async with sessions() as session:
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )
        await bind_org(session, ctx.org_id)
        try:
            yield session
        finally:
            await session.rollback()


async def chain_head(ctx: OrgContext, session: AsyncSession) -> tuple[int, str]:
    await bind_org(session, ctx.org_id)
    row = (await session.exec(_HEAD.bindparams(org_id=ctx.org_id))).first()  # type: ignore[call-overload]
    return (int(row.seq), str(row.hash)) if row is not None else (0, GENESIS_HASH)


async def fetch_batches(
    session: AsyncSession, statement: Select[Any], batch: int = BATCH
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The rows of `statement`, `batch` at a time, from one server-side cursor in the session's
    transaction: one query and one plan for the whole read, memory bounded by a batch, and the
    rows as the driver's plain tuples (SQLAlchemy's result rows cost more than the work done on
    most of them). Bind the session to the organization first."""
    connection = await session.connection()
    compiled = statement.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    driver: Any = (await connection.get_raw_connection()).driver_connection  # psycopg's
    # A name of its own: two reads may be open on one connection at a time.
    async with driver.cursor(name=f"blocks_{secrets.token_hex(6)}") as cursor:
        await cursor.execute(str(compiled), compiled.params)
        while rows := await cursor.fetchmany(batch):
            yield rows


# `hashed_payload`'s occurred_at (`astimezone(UTC).isoformat(timespec="microseconds")`), written
# by PostgreSQL: a tenth of the export's time when Python parses and formats it.
_HASHED_TIME = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
# An event's columns as `export_format.stored_event_lines` takes them (all text but seq).
_STORED_EVENT = select(
    cast(_EVENTS.c.id, Text),
    cast(_EVENTS.c.org_id, Text),
    _EVENTS.c.seq,
    func.to_char(func.timezone("UTC", _EVENTS.c.occurred_at), _HASHED_TIME),
    _EVENTS.c.action,
    _EVENTS.c.actor_type,
    _EVENTS.c.actor_id,
    _EVENTS.c.actor_email,
    _EVENTS.c.target_type,
    _EVENTS.c.target_id,
    _EVENTS.c.run_id,
    _EVENTS.c.outcome,
    _EVENTS.c.reason,
    _EVENTS.c.ip,
    _EVENTS.c.user_agent,
    cast(_EVENTS.c.data, Text),
    _EVENTS.c.prev_hash,
    _EVENTS.c.hash,
)


async def stored_events_after(
    ctx: OrgContext, session: AsyncSession, after_seq: int, limit: int
) -> list[tuple[Any, ...]]:
    """Up to `limit` events with seq > `after_seq`, in seq order, as `stored_event_lines` takes
    them (what a SIEM stream sends: each event exactly as the export writes it)."""
    await bind_org(session, ctx.org_id)
    statement = (
        _STORED_EVENT.where(_EVENTS.c.org_id == ctx.org_id, _EVENTS.c.seq > after_seq)
        .order_by(_EVENTS.c.seq)
        .limit(limit)
    )
    return [tuple(row) for row in (await session.exec(statement)).all()]  # type: ignore[call-overload]


async def checkpoints_signed_after(
    ctx: OrgContext,
    session: AsyncSession,
    after: datetime | None,
    *,
    up_to_seq: int | None,
    limit: int,
) -> list[tuple[datetime, SignedCheckpoint]]:
    """Up to `limit` checkpoints signed after `after` (all if None) covering no event beyond
    `up_to_seq` (any if None), in signing order, each with its signing time (a stream's cursor)."""
    await bind_org(session, ctx.org_id)
    statement = select(_CHECKPOINTS).where(_CHECKPOINTS.c.org_id == ctx.org_id)
    if after is not None:
        statement = statement.where(_CHECKPOINTS.c.signed_at > after)
    if up_to_seq is not None:
        statement = statement.where(_CHECKPOINTS.c.seq <= up_to_seq)
    statement = statement.order_by(_CHECKPOINTS.c.signed_at, _CHECKPOINTS.c.id).limit(limit)
    rows = (await session.exec(statement)).mappings().all()  # type: ignore[call-overload]
    return [(row["signed_at"], _signed(row)) for row in rows]


def _link(row: Mapping[str, Any]) -> Link:
    return hashed_payload(dict(row)), row["prev_hash"], row["hash"]


async def event_pages(
    ctx: OrgContext, session: AsyncSession, filters: ExportFilters
) -> AsyncIterator[list[Link]]:
    """The org's events in seq order as links, `PAGE` at a time (keyset pagination on seq)."""
    await bind_org(session, ctx.org_id)
    after = -(2**63)
    while True:
        statement = (
            select(_EVENTS)
            .where(_EVENTS.c.org_id == ctx.org_id, _EVENTS.c.seq > after, *filters.where())
            .order_by(_EVENTS.c.seq)
            .limit(PAGE)
        )
        rows = (await session.exec(statement)).mappings().all()  # type: ignore[call-overload]
        if rows:
            yield [_link(row) for row in rows]
        if len(rows) < PAGE:
            return
        after = rows[-1]["seq"]


async def seq_range(
    ctx: OrgContext, session: AsyncSession, filters: ExportFilters
) -> tuple[int | None, int | None]:
    await bind_org(session, ctx.org_id)
    statement = select(func.min(_EVENTS.c.seq), func.max(_EVENTS.c.seq)).where(
        _EVENTS.c.org_id == ctx.org_id, *filters.where()
    )
    low, high = (await session.exec(statement)).one()  # type: ignore[call-overload]
    return low, high


def _signed(row: Mapping[str, Any]) -> SignedCheckpoint:
    return SignedCheckpoint(
        org_id=str(row["org_id"]),
        seq=int(row["seq"]),
        hash=str(row["hash"]),
        signed_at=format_signed_at(row["signed_at"]),
        key_id=str(row["key_id"]),
        signature=str(row["signature"]),
    )


async def checkpoint_pages(
    ctx: OrgContext, session: AsyncSession, *, above: int, up_to: int | None
) -> AsyncIterator[list[SignedCheckpoint]]:
    """Checkpoints with `above < seq <= up_to`, in seq order, paged on (seq, id)."""
    await bind_org(session, ctx.org_id)
    after: tuple[int, uuid.UUID] = (above, uuid.UUID(int=(1 << 128) - 1))
    while True:
        statement = (
            select(_CHECKPOINTS)
            .where(
                _CHECKPOINTS.c.org_id == ctx.org_id,
                tuple_(_CHECKPOINTS.c.seq, _CHECKPOINTS.c.id) > tuple_(*after),
            )
            .order_by(_CHECKPOINTS.c.seq, _CHECKPOINTS.c.id)
            .limit(PAGE)
        )
        if up_to is not None:
            statement = statement.where(_CHECKPOINTS.c.seq <= up_to)
        rows = (await session.exec(statement)).mappings().all()  # type: ignore[call-overload]
        if rows:
            yield [_signed(row) for row in rows]
        if len(rows) < PAGE:
            return
        after = (rows[-1]["seq"], rows[-1]["id"])


def export_checkpoint_pages(
    ctx: OrgContext,
    session: AsyncSession,
    filters: ExportFilters,
    first_seq: int | None,
    last_seq: int | None,
) -> AsyncIterator[list[SignedCheckpoint]]:
    """The checkpoints an export holds: all of them when it is complete, else those in range."""
    if filters.complete:
        # All of them: one past the last event shows that events at the end were removed.
        return checkpoint_pages(ctx, session, above=-1, up_to=None)
    if first_seq is None or last_seq is None:
        return _no_checkpoints()
    return checkpoint_pages(ctx, session, above=first_seq - 1, up_to=last_seq)


async def _no_checkpoints() -> AsyncIterator[list[SignedCheckpoint]]:
    return
    yield


@dataclass(frozen=True)
class CertifyingCheckpoint:
    """The first signed checkpoint at or after an event: it certifies the chain through it."""

    seq: int
    signed_at: datetime
    key_id: str


async def certifying_checkpoints(
    ctx: OrgContext, session: AsyncSession, seqs: Sequence[int]
) -> dict[int, CertifyingCheckpoint]:
    """For each of these event seqs that a checkpoint certifies, that checkpoint."""
    if not seqs:
        return {}
    await bind_org(session, ctx.org_id)
    rows = await session.exec(  # type: ignore[call-overload]
        _CERTIFIED_BY.bindparams(seqs=list(seqs), org_id=ctx.org_id)
    )
    return {
        row.event_seq: CertifyingCheckpoint(row.seq, row.signed_at, row.key_id)
        for row in rows.all()
        if row.seq is not None
    }


async def verify_chain(
    ctx: OrgContext, session: AsyncSession, public_keys: Mapping[str, str]
) -> VerificationReport:
    """The live chain, streamed page by page through the verifier the offline tool uses."""
    verifier = ChainVerifier(
        org_id=str(ctx.org_id),
        complete=True,
        head=await chain_head(ctx, session),
        public_keys=public_keys,
        remember_hashes=False,
    )
    checked_up_to = -1
    async for links in event_pages(ctx, session, ExportFilters()):
        # Checkpoints go in before the events they certify, so they are matched as those pass.
        up_to = int(links[-1][0]["seq"])
        async for checkpoints in checkpoint_pages(ctx, session, above=checked_up_to, up_to=up_to):
            for checkpoint in checkpoints:
                verifier.add_checkpoint(checkpoint)
        checked_up_to = max(checked_up_to, up_to)
        verifier.feed(links)
        if verifier.settled:
            break
    else:
        # Checkpoints beyond the last event certify events that are no longer there.
        async for checkpoints in checkpoint_pages(ctx, session, above=checked_up_to, up_to=None):
            for checkpoint in checkpoints:
                verifier.add_checkpoint(checkpoint)
    return verifier.finish()


async def export_chunks(
    ctx: OrgContext,
    sessions: async_sessionmaker[AsyncSession],
    filters: ExportFilters,
    public_keys: Mapping[str, str],
    *,
    reveal_content: bool = False,
) -> AsyncIterator[bytes]:
    """The JSON Lines export of one organization's chain (header, events, checkpoints), read
    from one snapshot, as ASCII bytes in chunks of many lines: what `GET /v1/audit/export`
    streams. `reveal_content` adds, after each batch of events, a `content` line per event
    with sealed run content: its fields in clear and that event's own key (never the
    organization's), so an auditor checks clear text against what the chain hashed."""
    async with snapshot(ctx, sessions) as session:
        head = await chain_head(ctx, session)
        first_seq, last_seq = await seq_range(ctx, session, filters)
        header = header_line(
            org_id=str(ctx.org_id),
            exported_at=datetime.now(UTC),
            filters=filters.as_header(),
            complete=filters.complete,
            first_seq=first_seq,
            last_seq=last_seq,
            head=head,
            public_keys=dict(public_keys),
            content="revealed" if reveal_content else None,
        )
        yield header.encode("ascii")
        keys = ContentKeys(session, ctx.org_id)
        events = _STORED_EVENT.where(_EVENTS.c.org_id == ctx.org_id, *filters.where()).order_by(
            _EVENTS.c.seq
        )
        async for rows in fetch_batches(session, events, BATCH):
            yield stored_event_lines(rows)
            if reveal_content:
                yield await _content_lines(keys, rows)
        checkpoint_pages = export_checkpoint_pages(ctx, session, filters, first_seq, last_seq)
        async for checkpoints in checkpoint_pages:
            yield "".join(checkpoint.line() for checkpoint in checkpoints).encode("ascii")


async def _content_lines(keys: ContentKeys, rows: Sequence[Any]) -> bytes:
    """The `content` lines of a batch's events that hold sealed run content."""
    lines: list[str] = []
    for row in rows:
        event_id, data_text = row[0], row[15]
        if data_text is None or CONTENT_PREFIX not in data_text:
            continue
        data = json.loads(data_text)
        sealed = {n: c for n, v in data.items() if (c := parse_content(v)) is not None}
        if not sealed:
            continue
        revealed = {name: await keys.reveal(None, name, data[name]) for name in sealed}
        key = await keys.get(next(iter(sealed.values())).key_id)
        event_key = (
            event_content_key(key.secret, key.org_id, uuid.UUID(str(event_id)))
            if key is not None
            else None
        )
        lines.append(dumps_line(content_line(str(event_id), event_key, revealed)))
    return "".join(lines).encode("ascii")


async def export_lines(
    ctx: OrgContext,
    sessions: async_sessionmaker[AsyncSession],
    filters: ExportFilters,
    public_keys: Mapping[str, str],
) -> AsyncIterator[str]:
    """`export_chunks` as text (what `blocks audit export` writes to its file)."""
    async for chunk in export_chunks(ctx, sessions, filters, public_keys):
        yield chunk.decode("ascii")

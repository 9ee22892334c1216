"""The async database engine, sessions, and the per-transaction organization used by row-level security."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel.ext.asyncio.session import AsyncSession


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and pin the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        # A failed statement's message would otherwise carry its parameters (password hashes,
        # token hashes, sealed secrets) into logs and tracebacks.
        hide_parameters=True,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


_ORG_KEY = "blocks_org_id"


def mark_bound(session: AsyncSession, org_id: uuid.UUID) -> bool:
    """Record the session's organization; True if it was already bound to it.

    Refuses a second organization: a session never serves two tenants.
    """
    wanted = str(org_id)
    bound = session.info.get(_ORG_KEY)
    if bound is not None and bound != wanted:
        raise RuntimeError("this database session is already bound to another organization")
    session.info[_ORG_KEY] = wanted
    return bound == wanted


def bound_org(session: AsyncSession) -> uuid.UUID | None:
    """The organization this session is bound to, if any."""
    bound = session.info.get(_ORG_KEY)
    return uuid.UUID(bound) if bound is not None else None


async def bind_org(session: AsyncSession, org_id: uuid.UUID) -> None:
    """Scope this session to one organization; RLS policies read it as the last line of defence.

    Every tenant data-access function calls this with its context's org. The setting is
    transaction-local, so it is also re-applied at the start of every later transaction of the
    same session (a route may commit mid-way). SQL functions that bind in the same round trip
    as their work (API key resolution, audit appends) call `mark_bound` instead.
    """
    if mark_bound(session, org_id):
        return
    await session.exec(  # type: ignore[call-overload]
        text("SELECT set_config('app.org_id', :org_id, true)").bindparams(org_id=str(org_id))
    )


@event.listens_for(Session, "after_begin")
def _bind_org_on_begin(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    org_id = session.info.get(_ORG_KEY)
    # A savepoint is inside a transaction that is bound already (the setting is transaction-wide).
    if org_id is not None and not transaction.nested:
        connection.exec_driver_sql("SELECT set_config('app.org_id', %s, true)", (org_id,))

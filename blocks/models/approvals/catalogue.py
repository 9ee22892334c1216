"""The workflow catalogue: what each worker serves, written at its start, read by the API.

These rows describe the deployment's code, not an organization's data: no organization column,
no row-level security, no `OrgContext`. A worker re-publishes on every start (a changed schema of
the same version replaces the old one) and refreshes `last_seen_at` while it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.approvals.catalogue import CatalogueEntry
from blocks.models.base import utcnow


class PublishedWorkflow(SQLModel, table=True):
    __tablename__ = "workflow_catalogue"

    name: str = Field(sa_column=Column(String(200), primary_key=True))
    version: str = Field(sa_column=Column(String(50), primary_key=True))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    input_schema: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    forms: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    published_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class WorkflowServer(SQLModel, table=True):
    __tablename__ = "workflow_servers"

    name: str = Field(sa_column=Column(String(200), primary_key=True))
    version: str = Field(sa_column=Column(String(50), primary_key=True))
    task_queue: str = Field(sa_column=Column(String(200), primary_key=True))
    worker: str = Field(sa_column=Column(String(300), primary_key=True))
    first_seen_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    last_seen_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


@dataclass(frozen=True)
class Served:
    """Where and when a worker was seen serving a version."""

    version: str
    task_queue: str
    worker: str
    first_seen_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class CatalogueView:
    """A published workflow: its newest version (by when a worker last served it) and servers."""

    workflow: PublishedWorkflow
    servers: list[Served]


async def publish(session: AsyncSession, entries: Sequence[CatalogueEntry], *, worker: str) -> None:
    """Record that `worker` serves `entries` now (one statement per table)."""
    if not entries:
        return
    now = utcnow()
    catalogue = insert(PublishedWorkflow).values(
        [
            {
                "name": e.name,
                "version": e.version,
                "description": e.description,
                "input_schema": e.input_schema,
                "forms": e.forms,
                "published_at": now,
            }
            for e in entries
        ]
    )
    await session.exec(
        catalogue.on_conflict_do_update(  # type: ignore[call-overload]
            index_elements=["name", "version"],
            set_={
                "description": catalogue.excluded.description,
                "input_schema": catalogue.excluded.input_schema,
                "forms": catalogue.excluded.forms,
                "published_at": catalogue.excluded.published_at,
            },
        )
    )
    servers = insert(WorkflowServer).values(
        [
            {
                "name": e.name,
                "version": e.version,
                "task_queue": e.task_queue,
                "worker": worker,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for e in entries
        ]
    )
    await session.exec(
        servers.on_conflict_do_update(  # type: ignore[call-overload]
            index_elements=["name", "version", "task_queue", "worker"],
            set_={"last_seen_at": servers.excluded.last_seen_at},
        )
    )


async def mark_seen(session: AsyncSession, *, worker: str) -> None:
    """The worker is still serving what it published."""
    await session.exec(  # type: ignore[call-overload]
        text("UPDATE workflow_servers SET last_seen_at = now() WHERE worker = :worker").bindparams(
            worker=worker
        )
    )


async def published_workflows(session: AsyncSession) -> list[CatalogueView]:
    """Every published workflow by name, its newest served version first in `servers`."""
    servers = (
        await session.exec(
            select(WorkflowServer).order_by(
                col(WorkflowServer.name), col(WorkflowServer.last_seen_at).desc()
            )
        )
    ).all()
    newest: dict[str, str] = {}
    by_name: dict[str, list[Served]] = {}
    for s in servers:
        newest.setdefault(s.name, s.version)
        by_name.setdefault(s.name, []).append(
            Served(s.version, s.task_queue, s.worker, s.first_seen_at, s.last_seen_at)
        )
    if not newest:
        return []
    rows = (
        await session.exec(select(PublishedWorkflow).where(col(PublishedWorkflow.name).in_(newest)))
    ).all()
    versions = {(r.name, r.version): r for r in rows}
    return [
        CatalogueView(versions[(name, version)], by_name[name])
        for name, version in sorted(newest.items())
        if (name, version) in versions
    ]


async def published_workflow(
    session: AsyncSession, name: str, *, prefer_task_queue: str
) -> tuple[PublishedWorkflow, str] | None:
    """The version to start and the task queue to start it on, or None if nobody published it.

    The newest version served on `prefer_task_queue` (the API's own), else the newest anywhere.
    """
    statement = (
        select(PublishedWorkflow, WorkflowServer.task_queue)
        .join(
            WorkflowServer,
            (col(WorkflowServer.name) == col(PublishedWorkflow.name))
            & (col(WorkflowServer.version) == col(PublishedWorkflow.version)),
        )
        .where(PublishedWorkflow.name == name)
        .order_by(
            (col(WorkflowServer.task_queue) == prefer_task_queue).desc(),
            col(WorkflowServer.last_seen_at).desc(),
        )
        .limit(1)
    )
    found = (await session.exec(statement)).first()
    return (found[0], found[1]) if found is not None else None

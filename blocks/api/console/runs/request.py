"""A run's request as the run and step pages show it: the input it started with, its attached
files, and the upload a console form makes, each through the JSON API's own route functions."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Request, UploadFile
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.datastructures import UploadFile as FormFile
from temporalio.client import Client

from blocks.api.approvals.attachments import (
    AttachmentOut,
    attachment_settings,
    list_attachments,
    upload_attachment,
)
from blocks.api.approvals.runs.run_input import read_run_input
from blocks.api.console.forms import read_files
from blocks.api.console.time_text import utc
from blocks.api.deps import require
from blocks.core.context import OrgContext
from blocks.core.roles import Permission

# The file picker's hint (a phone's picker offers these); the bytes decide on upload, not this.
ACCEPT = (
    ".pdf,.png,.jpg,.jpeg,.txt,.csv,.doc,.docx,.xls,.xlsx,.ppt,.pptx,"
    "application/pdf,image/png,image/jpeg,text/plain,text/csv"
)
# How much of a SHA-256 a row shows; the whole digest is one click (a <details>) away.
DIGEST_SHOWN = 12


@dataclass(frozen=True)
class InputItem:
    label: str  # the parameter's name, as the run was started with it
    text: str | None  # a string (or a number, true, null), shown as plain text
    data: str | None  # a list or an object, as indented JSON


@dataclass(frozen=True)
class RunRequest:
    kept: bool  # False once Temporal no longer keeps the run's history
    items: list[InputItem]


@dataclass(frozen=True)
class FileRow:
    name: str
    href: str  # the API's download URL (Content-Disposition: attachment)
    media_type: str
    size: str
    sha256: str
    sha256_short: str
    uploaded_by: str
    at: str
    decision: str  # "approve on step approve", or "" while no decision names the file


@dataclass(frozen=True)
class UploadHint:
    kinds: str  # what the organization accepts, e.g. "jpeg, pdf, png"
    limit: str  # the largest file, e.g. "10 MB"


def input_items(params: dict[str, Any]) -> list[InputItem]:
    items = []
    for key, value in params.items():
        if isinstance(value, str):
            items.append(InputItem(str(key), value, None))
        elif isinstance(value, dict | list):
            items.append(InputItem(str(key), None, json.dumps(value, indent=2, ensure_ascii=False)))
        else:
            items.append(InputItem(str(key), json.dumps(value), None))
    return items


def size_text(size: int) -> str:
    """`812 bytes`, `47.1 KB`, `2.5 MB`, in units of 1024 (so the 10 MB limit reads `10 MB`)."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")


def download_url(run_id: uuid.UUID, attachment_id: uuid.UUID) -> str:
    return f"/v1/runs/{run_id}/attachments/{attachment_id}"


def file_rows(files: list[AttachmentOut], names: dict[str, str]) -> list[FileRow]:
    return [
        FileRow(
            name=f.name,
            href=download_url(f.run_id, f.id),
            media_type=f.media_type,
            size=size_text(f.size),
            sha256=f.sha256,
            sha256_short=f.sha256[:DIGEST_SHOWN],
            uploaded_by=names.get(str(f.uploaded_by), str(f.uploaded_by)),
            at=utc(f.created_at),
            decision=f"{f.decision} on step {f.step_id}" if f.decision and f.step_id else "",
        )
        for f in files
    ]


async def run_request(
    ctx: OrgContext, session: AsyncSession, client: Client, run_id: uuid.UUID
) -> RunRequest:
    """The run's input as `GET /v1/runs/{id}/input` reads it (the caller holds run:read)."""
    read = await read_run_input(run_id=run_id, ctx=ctx, session=session, client=client)
    return RunRequest(kept=read.kept, items=input_items(read.input or {}))


async def run_files(
    ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID, names: dict[str, str]
) -> list[FileRow]:
    """The run's files as `GET /v1/runs/{id}/attachments` lists them (the caller holds run:read)."""
    listed = await list_attachments(run_id=run_id, ctx=ctx, session=session)
    return file_rows(listed.attachments, names)


async def upload_hint(request: Request, ctx: OrgContext, session: AsyncSession) -> UploadHint:
    """What the organization accepts (`GET /v1/org/attachments`), said beside a file input;
    without org:read the hint is the server's limit only (the upload decides either way)."""
    limit: int = request.app.state.settings.attachment_max_bytes
    if not ctx.can(Permission.ORG_READ):
        return UploadHint("", size_text(limit))
    settings = await attachment_settings(request=request, ctx=ctx, session=session)
    return UploadHint(", ".join(settings.allowed_kinds), size_text(settings.max_bytes))


async def chosen_file(request: Request) -> FormFile | None:
    """The file a multipart form carries, if one was chosen (a browser sends an empty part with
    no file name for a file input left empty)."""
    return next((f for f in await read_files(request) if f.filename), None)


async def upload(
    request: Request,
    ctx: OrgContext,
    session: AsyncSession,
    run_id: uuid.UUID,
    chosen: FormFile,
) -> AttachmentOut:
    """Attach `chosen` through `POST /v1/runs/{id}/attachments`: its refusals (403 audited, 404,
    413, 422 saying what the bytes are) are the API's Problems. The route's own dependency asks
    for run:read, so it is asked here too, the same way (a denial is audited)."""
    ctx = await require(Permission.RUN_READ)(request, ctx)
    file = UploadFile(
        chosen.file, size=chosen.size, filename=chosen.filename, headers=chosen.headers
    )
    return await upload_attachment(
        run_id=run_id, request=request, ctx=ctx, session=session, file=file
    )

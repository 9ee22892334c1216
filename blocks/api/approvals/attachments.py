"""Attachments on runs (an invoice, a contract): upload, list, download; and the organization's
allow-list of the kinds it accepts.

Who: reading a run's files needs `run:read` (whoever may read the run may download them). Uploading
needs `run:read` and also `run:start` or `step:decide`: the people who ask for something or decide
on it bring the files; an auditor, who only reads, cannot add any. Every upload is an audit event
in the run's chain with the file's SHA-256, size, detected type and display name. A file's kind is
decided by its bytes (blocks.infra.content.file_types), never by its name or Content-Type; its
bytes are stored sealed under the organization's data key (blocks.models.approvals.attachments).
A download is always `Content-Disposition: attachment`, with the detected type and `nosniff`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Request, Response, UploadFile
from pydantic import BaseModel, Field

from blocks.api.deps import (
    CanManageSecurity,
    CanReadOrg,
    CanReadRuns,
    DbSession,
    forbidden,
    record_change,
    record_denial,
)
from blocks.api.errors import Problem, invalid_field, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import request_audit_fields
from blocks.core.audit.records import AuditRecord
from blocks.core.context import OrgContext
from blocks.core.roles import Permission
from blocks.infra.content.file_types import (
    MEDIA_TYPES,
    FileKind,
    FileRefused,
    check_allowed,
    detect,
    display_name,
    refusal,
)
from blocks.infra.crypto.org_keys import OrgKeyUnavailable
from blocks.models.approvals.attachments import (
    Attachment,
    AttachmentUnavailable,
    add_attachment,
    allowed_kinds,
    get_attachment,
    open_attachment,
    run_attachments,
    set_allowed_kinds,
)
from blocks.models.approvals.runs import get_run
from blocks.models.audit.events import append_events

router = APIRouter(tags=["approvals"])

_ATTACHMENT_ID = "6a0b9c8d-7e6f-4a5b-8c9d-0e1f2a3b4c5d"
_SHA256 = "9f2c1e0d4b3a29187c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b"
_ATTACHMENT = {
    "id": _ATTACHMENT_ID,
    "run_id": ex.RUN_ID,
    "name": "invoice-2025-031.pdf",
    "media_type": "application/pdf",
    "kind": "pdf",
    "size": 48213,
    "sha256": _SHA256,
    "uploaded_by": ex.OPERATOR_ID,
    "created_at": ex.CREATED,
    "step_id": None,
    "decision": None,
}
_UPLOADERS = (Permission.RUN_START, Permission.STEP_DECIDE)
_KINDS = "pdf, png, jpeg, text, csv, docx, xlsx, pptx, doc, xls, ppt"


class AttachmentOut(BaseModel):
    model_config = example(**_ATTACHMENT)

    id: uuid.UUID
    run_id: uuid.UUID
    name: str = Field(description="The display name (the client's file name, sanitized)")
    media_type: str = Field(description="The type its bytes showed, sent on download")
    kind: str
    size: int = Field(description="Bytes")
    sha256: str = Field(description="Hex SHA-256 of the bytes, as in the audit log")
    uploaded_by: uuid.UUID
    created_at: datetime
    step_id: str | None = Field(description="The step whose decision named the file, if any")
    decision: str | None = Field(description="That decision (approve or reject), if any")


class AttachmentListOut(BaseModel):
    model_config = example(attachments=[_ATTACHMENT])

    attachments: list[AttachmentOut]


class AttachmentSettingsIn(StrictModel):
    model_config = example(allowed_kinds=["pdf", "png", "jpeg"])

    allowed_kinds: list[FileKind] = Field(
        max_length=len(FileKind), description=f"The kinds members may upload, of: {_KINDS}"
    )


class AttachmentSettingsOut(BaseModel):
    model_config = example(allowed_kinds=["jpeg", "pdf", "png"], max_bytes=10 * 1024 * 1024)

    allowed_kinds: list[str]
    max_bytes: int = Field(description="The largest file accepted (the server's setting)")


def _out(attachment: Attachment) -> AttachmentOut:
    return AttachmentOut(
        id=attachment.id,
        run_id=attachment.run_id,
        name=attachment.file_name,
        media_type=attachment.media_type,
        kind=attachment.kind,
        size=attachment.size_bytes,
        sha256=attachment.sha256,
        uploaded_by=attachment.uploaded_by,
        created_at=attachment.created_at,
        step_id=attachment.step_id,
        decision=attachment.decision,
    )


def _too_large(limit: int) -> Problem:
    return Problem(
        413,
        "Content Too Large",
        f"file: the file is larger than {limit} bytes",
        code="file_too_large",
        errors=[{"field": "file", "reason": f"larger than {limit} bytes"}],
    )


async def _may_upload(request: Request, ctx: OrgContext) -> uuid.UUID:
    if not any(ctx.can(permission) for permission in _UPLOADERS):
        await record_denial(request, ctx, "missing permission run:start or step:decide")
        raise forbidden("your roles grant neither run:start nor step:decide")
    if ctx.user_id is None:
        raise forbidden("only a member can upload a file")
    return ctx.user_id


@router.post(
    "/v1/runs/{run_id}/attachments",
    status_code=201,
    response_model=AttachmentOut,
    summary="Attach a file to a run",
    operation_id="upload_attachment",
    openapi_extra={
        "requestBody": {
            "content": {"multipart/form-data": {"example": {"file": "(the file's bytes)"}}}
        }
    },
)
async def upload_attachment(
    run_id: uuid.UUID,
    request: Request,
    ctx: CanReadRuns,
    session: DbSession,
    file: Annotated[
        UploadFile,
        File(
            description="The file: PDF, PNG, JPEG, UTF-8 text or CSV, or an Office document, as "
            "the organization allows; its kind is decided by its bytes"
        ),
    ],
) -> AttachmentOut:
    """Needs `run:read` and also `run:start` or `step:decide` (else 403, audited). The file's
    bytes decide its kind; a refusal (422) says what they are. Too large: 413."""
    uploader = await _may_upload(request, ctx)
    run = await get_run(ctx, session, run_id)
    if run is None:
        raise not_found("run")
    limit: int = request.app.state.settings.attachment_max_bytes
    if file.size is not None and file.size > limit:
        raise _too_large(limit)
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise _too_large(limit)
    name = display_name(file.filename)
    declared = file.content_type or ""
    try:
        detected = detect(content, name=name)
        check_allowed(detected, await allowed_kinds(ctx, session))
    except FileRefused as refused:
        raise invalid_field("file", refusal(refused, declared)) from None
    attachment = await add_attachment(
        ctx,
        session,
        run_id=run.id,
        file_name=name,
        detected=detected,
        content=content,
        uploaded_by=uploader,
    )
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="attachment.uploaded",
                target_type="attachment",
                target_id=str(attachment.id),
                run_id=str(run.id),
                data={
                    "name": attachment.file_name,
                    "media_type": attachment.media_type,
                    "kind": attachment.kind,
                    "size": attachment.size_bytes,
                    "sha256": attachment.sha256,
                },
                **request_audit_fields(request, ctx),
            )
        ],
    )
    return _out(attachment)


@router.get(
    "/v1/runs/{run_id}/attachments",
    response_model=AttachmentListOut,
    summary="List a run's attachments",
    operation_id="list_attachments",
)
async def list_attachments(
    run_id: uuid.UUID, ctx: CanReadRuns, session: DbSession
) -> AttachmentListOut:
    run = await get_run(ctx, session, run_id)
    if run is None:
        raise not_found("run")
    return AttachmentListOut(
        attachments=[_out(a) for a in await run_attachments(ctx, session, run.id)]
    )


_DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes, as the type they showed when uploaded, always as a "
        "download (`Content-Disposition: attachment`, `X-Content-Type-Options: nosniff`)",
        "content": {
            media.split(";")[0]: {
                "schema": {"type": "string", "format": "binary"},
                "example": "%PDF-1.7 ..." if kind is FileKind.PDF else "(the file's bytes)",
            }
            for kind, media in MEDIA_TYPES.items()
        },
    }
}


@router.get(
    "/v1/runs/{run_id}/attachments/{attachment_id}",
    response_class=Response,
    responses=_DOWNLOAD,
    summary="Download an attachment",
    operation_id="download_attachment",
)
async def download_attachment(
    run_id: uuid.UUID, attachment_id: uuid.UUID, ctx: CanReadRuns, session: DbSession
) -> Response:
    attachment = await get_attachment(ctx, session, run_id, attachment_id)
    if attachment is None:
        raise not_found("attachment")
    try:
        content = await open_attachment(ctx, session, attachment)
    except (AttachmentUnavailable, OrgKeyUnavailable):
        # The organization's keys were destroyed, or the row was altered: the file is gone.
        raise not_found("attachment") from None
    return Response(
        content=content,
        media_type=attachment.media_type,
        headers={
            "Content-Disposition": content_disposition(attachment.file_name),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            # Opened in a tab anyway, it runs nothing and reaches nothing.
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback and the exact name as RFC 5987 `filename*`."""
    fallback = "".join(ch if ch.isascii() and ch.isprintable() else "_" for ch in name)
    fallback = fallback.replace('"', "_").replace("\\", "_") or "attachment"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get(
    "/v1/org/attachments",
    response_model=AttachmentSettingsOut,
    summary="Read which file kinds the organization accepts",
    operation_id="read_attachment_settings",
)
async def attachment_settings(
    request: Request, ctx: CanReadOrg, session: DbSession
) -> AttachmentSettingsOut:
    kinds = await allowed_kinds(ctx, session)
    return AttachmentSettingsOut(
        allowed_kinds=sorted(kinds), max_bytes=request.app.state.settings.attachment_max_bytes
    )


@router.put(
    "/v1/org/attachments",
    response_model=AttachmentSettingsOut,
    summary="Choose which file kinds members may upload",
    operation_id="set_attachment_settings",
)
async def set_attachment_settings(
    body: AttachmentSettingsIn, request: Request, ctx: CanManageSecurity, session: DbSession
) -> AttachmentSettingsOut:
    """Files already uploaded stay; the list applies to new uploads. An empty list refuses all."""
    before = sorted(await allowed_kinds(ctx, session))
    after = sorted(await set_allowed_kinds(ctx, session, body.allowed_kinds))
    if before != after:
        await record_change(
            request,
            ctx,
            session,
            "org.attachments_changed",
            target_type="organization",
            target_id=str(ctx.org_id),
            data={"allowed_kinds": {"before": before, "after": after}},
        )
    return AttachmentSettingsOut(
        allowed_kinds=after, max_bytes=request.app.state.settings.attachment_max_bytes
    )

"""Routes for signed audit checkpoints and the public key that verifies them.

The API holds no signing key: a checkpoint asked for here is signed by the worker (the system
workflow `blocks.audit_checkpoint_org`), where the key lives, and read back from the table.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from temporalio.client import WorkflowFailureError

from blocks.api.deps import CanReadAudit, DbSession, TemporalClient, require
from blocks.api.errors import service_unavailable
from blocks.api.params import BIGINT_MAX
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.core.context import OrgContext
from blocks.core.roles import Permission
from blocks.infra.crypto.signing import CheckpointPublicKeys
from blocks.models.audit.checkpoints import AuditCheckpoint, get_checkpoint, list_checkpoints
from blocks.workflows.checkpoints import ORG_CHECKPOINT_WORKFLOW, OrgCheckpointRequest

router = APIRouter(prefix="/v1/audit", tags=["audit"])

_SIGNING_TIMEOUT = timedelta(seconds=30)

# Making a checkpoint writes to the log: reading it (audit:read) is not enough.
CanCheckpoint = Annotated[OrgContext, Depends(require(Permission.AUDIT_CHECKPOINT))]


class PublicKeyOut(BaseModel):
    model_config = example(
        key_id=ex.SIGNING_KEY_ID,
        algorithm="Ed25519",
        public_key=ex.PUBLIC_KEY,
        jwk={
            "kty": "OKP",
            "crv": "Ed25519",
            "x": ex.PUBLIC_KEY_X,
            "kid": ex.SIGNING_KEY_ID,
            "use": "sig",
            "alg": "EdDSA",
        },
    )

    key_id: str
    algorithm: str
    public_key: str
    jwk: dict[str, str]


class CheckpointOut(BaseModel):
    model_config = example(
        id="8e7d6c5b-4a39-4281-9f0e-1d2c3b4a5968",
        org_id=ex.ORG_ID,
        seq=42,
        hash=ex.HASH,
        signed_at="2025-03-04T11:00:00Z",
        key_id=ex.SIGNING_KEY_ID,
        signature=ex.SIGNATURE,
    )

    id: str
    org_id: str
    seq: int
    hash: str
    signed_at: datetime
    key_id: str
    signature: str


def _public_keys(request: Request) -> CheckpointPublicKeys:
    return request.app.state.public_keys  # type: ignore[no-any-return]


def checkpoint_out(checkpoint: AuditCheckpoint) -> CheckpointOut:
    return CheckpointOut(
        id=str(checkpoint.id),
        org_id=str(checkpoint.org_id),
        seq=checkpoint.seq,
        hash=checkpoint.hash,
        signed_at=checkpoint.signed_at,
        key_id=checkpoint.key_id,
        signature=checkpoint.signature,
    )


@router.get(
    "/public-key",
    response_model=PublicKeyOut,
    summary="Read the public key that verifies checkpoints",
    operation_id="read_audit_public_key",
)
async def public_key(request: Request) -> PublicKeyOut:
    """Published without authentication: anyone holding a checkpoint can verify it."""
    current = _public_keys(request).current
    return PublicKeyOut(
        key_id=current.key_id, algorithm="Ed25519", public_key=current.b64(), jwk=current.jwk()
    )


@router.post(
    "/checkpoints",
    status_code=201,
    response_model=CheckpointOut,
    summary="Sign a checkpoint of the audit chain now",
    operation_id="create_checkpoint",
)
async def create(
    request: Request, ctx: CanCheckpoint, session: DbSession, client: TemporalClient
) -> CheckpointOut:
    try:
        checkpoint_id = await client.execute_workflow(
            ORG_CHECKPOINT_WORKFLOW,
            OrgCheckpointRequest(org_id=str(ctx.org_id)),
            id=f"checkpoint-{ctx.org_id}-{uuid.uuid4()}",
            task_queue=request.app.state.settings.task_queue,
            result_type=str,
            execution_timeout=_SIGNING_TIMEOUT,
        )
    except WorkflowFailureError as err:
        # No worker signed within the bound (none running, or the database down for it).
        raise service_unavailable(
            "no worker signed the checkpoint in time; retry in a few seconds",
            code="worker_unavailable",
        ) from err
    checkpoint = await get_checkpoint(ctx, session, uuid.UUID(checkpoint_id))
    assert checkpoint is not None  # the worker signed it for this organization
    return checkpoint_out(checkpoint)


@router.get(
    "/checkpoints",
    response_model=list[CheckpointOut],
    summary="List signed checkpoints",
    operation_id="list_checkpoints",
)
async def checkpoints(
    ctx: CanReadAudit,
    session: DbSession,
    after_seq: Annotated[int, Query(ge=-1, le=BIGINT_MAX)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CheckpointOut]:
    return [
        checkpoint_out(c)
        for c in await list_checkpoints(ctx, session, after_seq=after_seq, limit=limit)
    ]

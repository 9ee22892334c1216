"""Routes for signed audit checkpoints and the public key that verifies them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from blocks.api.deps import CanReadAudit, DbSession
from blocks.infra.crypto.signing import CheckpointSigner
from blocks.models.audit.checkpoints import AuditCheckpoint, create_checkpoint, list_checkpoints

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class PublicKeyOut(BaseModel):
    key_id: str
    algorithm: str
    public_key: str
    jwk: dict[str, str]


class CheckpointOut(BaseModel):
    id: str
    org_id: str
    seq: int
    hash: str
    signed_at: datetime
    key_id: str
    signature: str


def _signer(request: Request) -> CheckpointSigner:
    return request.app.state.signer  # type: ignore[no-any-return]


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


@router.get("/public-key", response_model=PublicKeyOut)
async def public_key(request: Request) -> PublicKeyOut:
    """Published without authentication: anyone holding a checkpoint can verify it."""
    signer = _signer(request)
    return PublicKeyOut(
        key_id=signer.key_id,
        algorithm="Ed25519",
        public_key=signer.public_key_b64(),
        jwk=signer.public_jwk(),
    )


@router.post("/checkpoints", status_code=201, response_model=CheckpointOut)
async def create(request: Request, ctx: CanReadAudit, session: DbSession) -> CheckpointOut:
    checkpoint = await create_checkpoint(ctx, session, _signer(request))
    assert checkpoint is not None  # only_if_new is off: a checkpoint is always made
    return checkpoint_out(checkpoint)


@router.get("/checkpoints", response_model=list[CheckpointOut])
async def checkpoints(
    ctx: CanReadAudit,
    session: DbSession,
    after_seq: Annotated[int, Query(ge=-1)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CheckpointOut]:
    return [
        checkpoint_out(c)
        for c in await list_checkpoints(ctx, session, after_seq=after_seq, limit=limit)
    ]

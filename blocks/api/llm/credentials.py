"""Routes for LLM credentials: where an organization's model server is, which models its
workflows may ask for, and the API key, which is write-only.

The key is sealed as it arrives (models.llm.credentials) and never answered, logged or audited:
answers and audit events carry the name, provider, base URL, models and the key's last four
characters. Every base URL passes the SSRF guard when saved (422 naming `base_url` and why) and
again at each call (the LLM activity calls through the guarded client).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, SecretStr, StringConstraints, field_validator

from blocks.api.deps import CanManageIntegrations, DbSession, record_change
from blocks.api.errors import invalid_field, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    OutboundURLRefused,
    check_outbound_url,
)
from blocks.models.llm.credentials import (
    OPENAI_BASE_URL,
    CredentialNameTaken,
    LlmCredential,
    create_credential,
    delete_credential,
    get_credential,
    list_credentials,
    rotate_key,
    update_credential,
)

router = APIRouter(prefix="/v1/llm/credentials", tags=["integrations"])

CREDENTIAL_ID = "4d3c2b1a-0f9e-4d8c-b7a6-958473625140"
_MODELS = ["gpt-4.1-mini", "gpt-4.1"]
_BASE_URL = "https://llm.acme.example/v1"
_EXAMPLE_KEY = "sk-example-not-a-real-key-7Qf3"

Provider = Literal["openai", "openai-compatible"]
Api = Literal["chat", "responses"]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\x21-\x7e]*$")
]
BaseUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
# A key goes into an Authorization header: printable ASCII only, no spaces or line breaks.
ApiKey = Annotated[SecretStr, Field(min_length=1, max_length=1000)]


def _printable_key(value: SecretStr) -> SecretStr:
    if not all("\x21" <= c <= "\x7e" for c in value.get_secret_value()):
        raise ValueError("must be printable ASCII without spaces")
    return value


class CredentialIn(StrictModel):
    model_config = example(
        name="default",
        provider="openai-compatible",
        base_url=_BASE_URL,
        api="chat",
        allowed_models=_MODELS,
        api_key=_EXAMPLE_KEY,
    )

    name: Name = Field(description="What a workflow's `self.llm(credential=...)` names")
    provider: Provider = "openai"
    base_url: BaseUrl | None = Field(
        default=None, description=f"The server's API root; {OPENAI_BASE_URL} for `openai`"
    )
    api: Api = Field(default="chat", description="Chat Completions or Responses, by default")
    allowed_models: list[ModelName] = Field(min_length=1, max_length=100)
    api_key: ApiKey = Field(description="Write-only: never answered, logged or audited")

    @field_validator("api_key")
    @classmethod
    def _printable(cls, value: SecretStr) -> SecretStr:
        return _printable_key(value)


class KeyIn(StrictModel):
    model_config = example(api_key=_EXAMPLE_KEY)

    api_key: ApiKey = Field(description="The new key; the old one is dropped")

    @field_validator("api_key")
    @classmethod
    def _printable(cls, value: SecretStr) -> SecretStr:
        return _printable_key(value)


class CredentialPatch(StrictModel):
    model_config = example(allowed_models=[*_MODELS, "gpt-4.1-nano"])

    base_url: BaseUrl | None = None
    api: Api | None = None
    allowed_models: list[ModelName] | None = Field(default=None, min_length=1, max_length=100)


class CredentialOut(BaseModel):
    model_config = example(
        id=CREDENTIAL_ID,
        name="default",
        provider="openai-compatible",
        base_url=_BASE_URL,
        api="chat",
        allowed_models=_MODELS,
        key_last4="7Qf3",
        created_by=ex.OWNER_ID,
        created_at=ex.CREATED,
        updated_at=ex.CREATED,
        rotated_at=None,
        deleted_at=None,
    )

    id: uuid.UUID
    name: str
    provider: str
    base_url: str
    api: str
    allowed_models: list[str]
    key_last4: str | None = Field(description="The key's last four characters (keys of 12+)")
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    rotated_at: datetime | None
    deleted_at: datetime | None


def _out(credential: LlmCredential) -> CredentialOut:
    return CredentialOut(
        id=credential.id,
        name=credential.name,
        provider=credential.provider,
        base_url=credential.base_url,
        api=credential.api,
        allowed_models=list(credential.allowed_models),
        key_last4=credential.key_last4,
        created_by=credential.created_by,
        created_at=credential.created_at,
        updated_at=credential.updated_at,
        rotated_at=credential.rotated_at,
        deleted_at=credential.deleted_at,
    )


def _metadata(credential: LlmCredential, **extra: Any) -> dict[str, Any]:
    """What an audit event says of a credential: never the key, only its last four."""
    return {
        "name": credential.name,
        "provider": credential.provider,
        "base_url": credential.base_url,
        "api": credential.api,
        "allowed_models": list(credential.allowed_models),
        "key_last4": credential.key_last4,
        **extra,
    }


async def _checked_base_url(request: Request, base_url: str) -> str:
    try:
        await check_outbound_url(base_url, OutboundPolicy.from_settings(request.app.state.settings))
    except OutboundURLRefused as refused:
        raise invalid_field("base_url", refused.reason) from None
    return base_url


async def _credential_or_404(
    ctx: OrgContext, session: DbSession, credential_id: uuid.UUID
) -> LlmCredential:
    credential = await get_credential(ctx, session, credential_id)
    if credential is None:
        raise not_found("LLM credential")
    return credential


@router.post("", status_code=201, response_model=CredentialOut, summary="Add an LLM credential")
async def add_llm_credential(
    body: CredentialIn, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> CredentialOut:
    """Store a model server's credential; the base URL must be public (or allowed by the
    operator's BLOCKS_OUTBOUND_ALLOW_PRIVATE), else 422 naming `base_url` and why."""
    if body.base_url is None and body.provider != "openai":
        raise invalid_field("base_url", "is required for an openai-compatible provider")
    base_url = await _checked_base_url(request, body.base_url or OPENAI_BASE_URL)
    try:
        credential = await create_credential(
            ctx,
            session,
            name=body.name,
            provider=body.provider,
            base_url=base_url,
            api=body.api,
            allowed_models=list(dict.fromkeys(body.allowed_models)),
            api_key=body.api_key.get_secret_value(),
        )
    except CredentialNameTaken:
        raise invalid_field("name", f"an LLM credential named {body.name!r} exists") from None
    await record_change(
        request,
        ctx,
        session,
        "llm.credential.created",
        target_type="llm_credential",
        target_id=str(credential.id),
        data=_metadata(credential),
    )
    return _out(credential)


@router.get("", response_model=list[CredentialOut], summary="List LLM credentials")
async def list_llm_credentials(
    ctx: CanManageIntegrations, session: DbSession
) -> list[CredentialOut]:
    """The organization's credentials by name; each key shows its last four characters only."""
    return [_out(c) for c in await list_credentials(ctx, session)]


@router.get("/{credential_id}", response_model=CredentialOut, summary="Read an LLM credential")
async def read_llm_credential(
    credential_id: uuid.UUID, ctx: CanManageIntegrations, session: DbSession
) -> CredentialOut:
    return _out(await _credential_or_404(ctx, session, credential_id))


@router.put(
    "/{credential_id}/key", response_model=CredentialOut, summary="Rotate an LLM credential's key"
)
async def rotate_llm_credential_key(
    credential_id: uuid.UUID,
    body: KeyIn,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> CredentialOut:
    """Replace the key: the next model call uses the new one; the old one is dropped."""
    credential = await _credential_or_404(ctx, session, credential_id)
    previous = credential.key_last4
    credential = await rotate_key(ctx, session, credential, body.api_key.get_secret_value())
    await record_change(
        request,
        ctx,
        session,
        "llm.credential.key_rotated",
        target_type="llm_credential",
        target_id=str(credential.id),
        data=_metadata(credential, previous_key_last4=previous),
    )
    return _out(credential)


@router.patch("/{credential_id}", response_model=CredentialOut, summary="Change an LLM credential")
async def change_llm_credential(
    credential_id: uuid.UUID,
    body: CredentialPatch,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> CredentialOut:
    """Change the base URL (checked again, as when added), the default API or the models."""
    credential = await _credential_or_404(ctx, session, credential_id)
    before = _metadata(credential)
    base_url = await _checked_base_url(request, body.base_url) if body.base_url else None
    credential = await update_credential(
        ctx,
        session,
        credential,
        base_url=base_url,
        api=body.api,
        allowed_models=list(dict.fromkeys(body.allowed_models)) if body.allowed_models else None,
    )
    after = _metadata(credential)
    changed = sorted(k for k in after if after[k] != before[k])
    await record_change(
        request,
        ctx,
        session,
        "llm.credential.changed",
        target_type="llm_credential",
        target_id=str(credential.id),
        data={**after, "changed": changed, "before": {k: before[k] for k in changed}},
    )
    return _out(credential)


@router.delete("/{credential_id}", response_model=CredentialOut, summary="Delete an LLM credential")
async def delete_llm_credential(
    credential_id: uuid.UUID, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> CredentialOut:
    """The key is dropped at once; steps naming the credential fail until another is added."""
    credential = await _credential_or_404(ctx, session, credential_id)
    credential = await delete_credential(ctx, session, credential)
    await record_change(
        request,
        ctx,
        session,
        "llm.credential.deleted",
        target_type="llm_credential",
        target_id=str(credential.id),
        data=_metadata(credential),
    )
    return _out(credential)

"""`POST /v1/codec/decode` and `/v1/codec/encode`: Temporal's codec-server protocol, so an operator
reads a run's inputs and results in the real Temporal UI (or `temporal workflow show
--codec-endpoint`), and only those of the organization they are signed in to.

The bodies are Temporal's `Payloads` in proto3 JSON (`{"payloads": [{"metadata": {...}, "data":
"..."}]}`, bytes as base64), answered in the same shape. Decode opens only payloads sealed under
the caller's organization's key: one of another organization, or sealed under the deployment's
payload keys (Blocks' own workflows), refuses the whole request (403, audited); one that does not
open (tampered, its key destroyed) is a 422 naming it, never garbage; one not encrypted passes
through. Encode seals under the caller's organization's key.

The UI calls from its own origin with the session cookie (`credentials: include`), so these two
routes, and no other, answer CORS for the origins of BLOCKS_CODEC_CORS_ORIGINS (`CodecCors`); the
session's origin check accepts those origins here too (`identity.sessions.check_origin`). The
`X-Namespace` header the UI sends is ignored: a run's organization, not its namespace, decides.
"""

from __future__ import annotations

import base64
from typing import Annotated

from cryptography.exceptions import InvalidTag
from fastapi import APIRouter, Depends, Request
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.common.v1 import Payload

from blocks.api.deps import TemporalClient, forbidden, record_denial, require
from blocks.api.errors import invalid_field
from blocks.api.identity.sessions import CODEC_DECODE_PATH, CODEC_ENCODE_PATH, CODEC_PATHS
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.core.context import OrgContext
from blocks.core.roles import Permission
from blocks.infra.crypto.key_specs import PayloadKeyError
from blocks.infra.crypto.org_keys import OrgKeyUnavailable
from blocks.infra.temporal.payload_codec import ENCODING, EncryptionCodec, payload_org

router = APIRouter(tags=["approvals"])
CanDecodeRuns = Annotated[OrgContext, Depends(require(Permission.RUN_DECODE))]

MAX_PAYLOADS = 1_000
# What a payload that does not open raises: a failed tag (tampered, or relabelled), a key id
# nobody holds or one destroyed, a nonce cut short (ValueError), plaintext that is no payload.
_UNREADABLE = (InvalidTag, PayloadKeyError, OrgKeyUnavailable, ValueError, DecodeError)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


_SEALED = {
    "metadata": {
        "encoding": _b64("binary/encrypted"),
        "encryption-key-id": _b64(ex.KEY_ID),
        "blocks-org": _b64(ex.ORG_ID),
    },
    "data": _b64("<12-byte nonce, AES-256-GCM ciphertext and tag>"),
}
_PLAIN = {"metadata": {"encoding": _b64("json/plain")}, "data": _b64('{"currency":"EUR"}')}


# Proto3 JSON's bytes: standard or URL-safe base64, padded or not. Checked here because the
# protobuf parser skips any other character rather than refusing it.
_BASE64 = r"^[A-Za-z0-9+/_-]*={0,2}$"
Base64 = Annotated[str, Field(pattern=_BASE64, description="base64 bytes")]


class CodecPayload(BaseModel):
    """One Temporal payload in proto3 JSON: metadata values and data are base64."""

    model_config = example(**_PLAIN) | {"extra": "forbid"}

    metadata: dict[str, Base64] = Field(default_factory=dict, description="name -> bytes")
    data: Base64 = ""


class CodecPayloadsIn(BaseModel):
    model_config = example(payloads=[_SEALED]) | {"extra": "forbid"}

    payloads: list[CodecPayload] = Field(max_length=MAX_PAYLOADS)


class CodecPayloadsOut(BaseModel):
    model_config = example(payloads=[_PLAIN])

    payloads: list[CodecPayload]


def _payloads(body: CodecPayloadsIn) -> list[Payload]:
    parsed: list[Payload] = []
    for index, item in enumerate(body.payloads):
        try:
            parsed.append(json_format.ParseDict(item.model_dump(), Payload()))
        except json_format.ParseError:
            raise invalid_field(
                f"payloads[{index}]", "metadata values and data must be base64"
            ) from None
    return parsed


def _out(payloads: list[Payload]) -> CodecPayloadsOut:
    return CodecPayloadsOut(
        payloads=[CodecPayload.model_validate(json_format.MessageToDict(p)) for p in payloads]
    )


def _codec(client: TemporalClient) -> EncryptionCodec:
    codec = client.data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec):
        # Every process of Blocks encrypts; a client without the codec is a wiring mistake.
        raise RuntimeError("the API's Temporal client has no EncryptionCodec")
    return codec


async def _refuse_foreign(request: Request, ctx: OrgContext, payloads: list[Payload]) -> None:
    """403 (audited) unless every encrypted payload is sealed under the caller's organization."""
    for index, payload in enumerate(payloads):
        if payload.metadata.get("encoding") != ENCODING:
            continue
        try:
            org_id = payload_org(payload)
        except PayloadKeyError:
            org_id = None
        if org_id == ctx.org_id:
            continue
        whose = "another organization's key" if org_id else "no organization's key"
        await record_denial(request, ctx, f"codec: payloads[{index}] is sealed under {whose}")
        raise forbidden(
            f"payloads[{index}] is sealed under {whose}: only your organization's payloads decode"
        )


@router.post(
    CODEC_DECODE_PATH,
    response_model=CodecPayloadsOut,
    summary="Decode payloads (Temporal codec server)",
    operation_id="codec_decode",
)
async def decode_payloads(
    body: CodecPayloadsIn, request: Request, ctx: CanDecodeRuns, client: TemporalClient
) -> CodecPayloadsOut:
    """The Temporal UI's codec call: the payloads of your organization's runs, decrypted, in the
    order given. A payload sealed under another organization's key (or the deployment's own)
    refuses the whole request; one that does not decrypt is a 422 naming it; one that is not
    encrypted comes back as it was."""
    payloads = _payloads(body)
    await _refuse_foreign(request, ctx, payloads)
    codec = _codec(client)
    decoded: list[Payload] = []
    for index, payload in enumerate(payloads):
        try:
            decoded += await codec.decode([payload])
        except _UNREADABLE:
            raise invalid_field(
                f"payloads[{index}]", "does not decrypt (altered, or its key was destroyed)"
            ) from None
    return _out(decoded)


@router.post(
    CODEC_ENCODE_PATH,
    response_model=CodecPayloadsOut,
    summary="Encode payloads (Temporal codec server)",
    operation_id="codec_encode",
)
async def encode_payloads(
    body: CodecPayloadsIn, ctx: CanDecodeRuns, client: TemporalClient
) -> CodecPayloadsOut:
    """The Temporal UI's codec call for what it sends (a signal's or an update's input): the
    payloads sealed under your organization's key, as a run of it would seal them."""
    return _out(await _codec(client).for_org(ctx.org_id).encode(_payloads(body)))


class CodecCors:
    """CORS for the codec routes alone: a listed origin gets its preflight answered and may read
    the answers (credentials included); any other origin, and every other route, gets no CORS
    header (a preflight of theirs reaches the app, which has no OPTIONS route: 405)."""

    ALLOW_HEADERS = "content-type, x-namespace, authorization"

    def __init__(self, app: ASGIApp, *, origins: frozenset[str]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = self._listed_origin(scope)
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in Headers(scope=scope):
            preflight = Response(status_code=204, headers=self._cors(origin))
            preflight.headers["access-control-allow-methods"] = "POST"
            preflight.headers["access-control-allow-headers"] = self.ALLOW_HEADERS
            preflight.headers["access-control-max-age"] = "600"
            await preflight(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                for name, value in self._cors(origin).items():
                    if name == "vary":
                        answer.add_vary_header("Origin")
                    else:
                        answer[name] = value
            await send(message)

        await self.app(scope, receive, with_cors)

    def _listed_origin(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["path"] not in CODEC_PATHS:
            return None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
                return origin if origin.lower() in self.origins else None
        return None

    @staticmethod
    def _cors(origin: str) -> dict[str, str]:
        return {
            "access-control-allow-origin": origin,
            "access-control-allow-credentials": "true",
            "vary": "Origin",
        }

"""AES-256-GCM payload codec: Temporal history holds only ciphertext, under each run's organization key.

A payload of a run is sealed under its organization's data key (`infra.crypto.org_keys`): the
metadata names the organization and the key id, both bound as associated data, so a payload
cannot be relabelled to another organization or key. Temporal tells the codec which workflow a
payload belongs to (its serialization context); the installed key source maps that workflow id
to its organization. A payload with no organization (Blocks' own checkpoint workflows, a call
without a workflow, a process without a key source) is sealed under the payload keys
(BLOCKS_PAYLOAD_KEYS), as every payload was before organization keys. Tampered ciphertext fails
its tag and is refused, never decoded to garbage; a payload whose organization key was destroyed
no longer decodes at all.

The LLM step's model call (its prompt in, the reply out, and its failure) is sealed under the
run's own history key instead (`infra.crypto.run_keys`, metadata `blocks-scope: run`), which is
destroyed a grace period after the run closes: prompts and replies do not outlive the run.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Self

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext

from blocks.infra.crypto.key_specs import PayloadKeyError
from blocks.infra.crypto.org_keys import OrgDataKey, OrgKeySource, installed_org_keys
from blocks.infra.crypto.run_keys import RUN_SCOPED_ACTIVITIES, RunDataKey

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
ORG = "blocks-org"
SCOPE = "blocks-scope"
RUN_SCOPE = b"run"
_NONCE_BYTES = 12
_CACHE_LIMIT = 10_000  # organization keys and id pairs remembered per process


def payload_org(payload: Payload) -> uuid.UUID | None:
    """The organization whose key sealed `payload`; None if it is not sealed under one."""
    if payload.metadata.get("encoding") != ENCODING or ORG not in payload.metadata:
        return None
    try:
        return uuid.UUID(payload.metadata[ORG].decode())
    except (ValueError, UnicodeDecodeError):
        raise PayloadKeyError("payload names a malformed organization id") from None


def _org_aad(org_id: uuid.UUID, key_id: uuid.UUID) -> bytes:
    return f"blocks.payload.v2|{org_id}|{key_id}".encode()


def _run_aad(org_id: uuid.UUID, key_id: uuid.UUID) -> bytes:
    return f"blocks.payload.run.v1|{org_id}|{key_id}".encode()


@dataclasses.dataclass(frozen=True)
class _Binding:
    """Which payloads a codec instance seals: those of one workflow, or of one organization."""

    workflow_id: str | None = None
    org_id: uuid.UUID | None = None
    # A run-scoped activity's payloads (the LLM step's): sealed under the run's own key.
    run_scoped: bool = False


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """Seals each payload whole (metadata and data); opens payloads of every key it can reach, so
    older payload keys and older organization keys keep decrypting after a rotation."""

    def __init__(
        self,
        active_key_id: str,
        keys: Mapping[str, bytes],
        *,
        org_keys: OrgKeySource | None = None,
    ) -> None:
        self._active = active_key_id
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        # None: the process's installed source, looked up at each call (tests and the CLI build
        # their converter before the database is up).
        self._org_keys = org_keys
        self._binding = _Binding()
        # The metadata and associated data of each organization key, and the ids a payload's
        # metadata names, made once rather than per payload (shared by the bound copies).
        self._sealing: dict[uuid.UUID, tuple[dict[str, bytes], bytes]] = {}
        self._named: dict[tuple[bytes, bytes], tuple[uuid.UUID, uuid.UUID]] = {}

    def with_context(self, context: SerializationContext) -> Self:
        workflow_id = getattr(context, "workflow_id", None)
        if workflow_id is None:
            return self
        # Temporal names the activity on every side that converts its payloads: the workflow
        # scheduling it and reading its result, the worker running it and reporting back.
        run_scoped = getattr(context, "activity_type", None) in RUN_SCOPED_ACTIVITIES
        binding = _Binding(workflow_id=workflow_id, run_scoped=run_scoped)
        return self if binding == self._binding else self._bound(binding)

    def for_org(self, org_id: uuid.UUID) -> Self:
        """This codec sealing under `org_id`'s key whatever the payload's workflow (the codec
        endpoint's encode, which acts for the caller's organization)."""
        return self._bound(_Binding(org_id=org_id))

    def _bound(self, binding: _Binding) -> Self:
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound._binding = binding
        return bound

    def _source(self) -> OrgKeySource | None:
        return self._org_keys if self._org_keys is not None else installed_org_keys()

    async def _sealing_key(self) -> OrgDataKey | None:
        source = self._source()
        if source is None:
            return None
        org_id = self._binding.org_id
        if org_id is None and self._binding.workflow_id is not None:
            org_id = await source.run_org(self._binding.workflow_id)
        if org_id is None:
            return None
        return await source.active_key(org_id)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if self._binding.run_scoped:
            run_key = await self._run_sealing_key()
            if run_key is not None:
                return self._seal_with_run_key(run_key, payloads)
        org_key = await self._sealing_key()
        if org_key is None:
            return [self._seal_with_payload_key(payload) for payload in payloads]
        sealing = self._sealing.get(org_key.key_id)
        if sealing is None:
            if len(self._sealing) >= _CACHE_LIMIT:
                self._sealing.clear()
            metadata = {
                "encoding": ENCODING,
                KEY_ID: str(org_key.key_id).encode(),
                ORG: str(org_key.org_id).encode(),
            }
            sealing = self._sealing[org_key.key_id] = (
                metadata,
                _org_aad(org_key.org_id, org_key.key_id),
            )
        metadata, aad = sealing
        encoded: list[Payload] = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = org_key.cipher.encrypt(nonce, payload.SerializeToString(), aad)
            encoded.append(Payload(metadata=metadata, data=nonce + sealed))
        return encoded

    async def _run_sealing_key(self) -> RunDataKey | None:
        source, workflow_id = self._source(), self._binding.workflow_id
        if source is None or workflow_id is None:
            return None
        org_id = await source.run_org(workflow_id)
        return None if org_id is None else await source.run_key(org_id, workflow_id)

    def _seal_with_run_key(self, key: RunDataKey, payloads: Sequence[Payload]) -> list[Payload]:
        metadata = {
            "encoding": ENCODING,
            KEY_ID: str(key.key_id).encode(),
            ORG: str(key.org_id).encode(),
            SCOPE: RUN_SCOPE,
        }
        aad = _run_aad(key.org_id, key.key_id)
        encoded: list[Payload] = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = key.cipher.encrypt(nonce, payload.SerializeToString(), aad)
            encoded.append(Payload(metadata=metadata, data=nonce + sealed))
        return encoded

    def _seal_with_payload_key(self, payload: Payload) -> Payload:
        nonce = os.urandom(_NONCE_BYTES)
        # The key id is bound as associated data, so a payload cannot be relabelled.
        sealed = self._ciphers[self._active].encrypt(
            nonce, payload.SerializeToString(), self._active.encode()
        )
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self._active.encode()}, data=nonce + sealed
        )

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded: list[Payload] = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                # Not ours (e.g. written before encryption was enabled): pass through untouched.
                decoded.append(payload)
                continue
            if ORG not in payload.metadata:
                decoded.append(self._open_with_payload_key(payload))
            else:
                decoded.append(await self._open_with_org_key(payload))
        return decoded

    def _ids(self, payload: Payload) -> tuple[uuid.UUID, uuid.UUID]:
        """(organization, key id) a sealed payload's metadata names."""
        named = (payload.metadata[ORG], payload.metadata.get(KEY_ID, b""))
        ids = self._named.get(named)
        if ids is None:
            try:
                ids = (uuid.UUID(named[0].decode()), uuid.UUID(named[1].decode()))
            except (ValueError, UnicodeDecodeError):
                raise PayloadKeyError("payload names a malformed organization or key id") from None
            if len(self._named) >= _CACHE_LIMIT:
                self._named.clear()
            self._named[named] = ids
        return ids

    def _open_with_payload_key(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID, b"").decode()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(f"payload was encrypted with unknown key id {key_id!r}")
        nonce, sealed = payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:]
        return Payload.FromString(cipher.decrypt(nonce, sealed, key_id.encode()))

    async def _open_with_org_key(self, payload: Payload) -> Payload:
        source = self._source()
        if source is None:
            raise PayloadKeyError(
                "payload is sealed under an organization's data key and this process has no"
                " key source (start it with database access)"
            )
        org_id, key_id = self._ids(payload)
        nonce, sealed = payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:]
        if payload.metadata.get(SCOPE) == RUN_SCOPE:
            run_key = await source.run_key_by_id(org_id, key_id)
            return Payload.FromString(
                run_key.cipher.decrypt(nonce, sealed, _run_aad(org_id, key_id))
            )
        key = await source.key(org_id, key_id)
        return Payload.FromString(key.cipher.decrypt(nonce, sealed, _org_aad(org_id, key_id)))

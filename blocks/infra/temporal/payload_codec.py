"""AES-256-GCM payload codec: Temporal history holds only ciphertext of inputs, results and updates."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from blocks.infra.crypto.key_specs import PayloadKeyError

ENCODING = b"binary/encrypted"
_KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12


class EncryptionCodec(PayloadCodec):
    """Encrypts each payload whole (metadata and data) under the active key, naming the key id so
    older keys keep decrypting after a rotation."""

    def __init__(self, active_key_id: str, keys: Mapping[str, bytes]) -> None:
        self._active = active_key_id
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._active]
        encoded: list[Payload] = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            # The key id is bound as associated data, so a payload cannot be relabelled.
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), self._active.encode())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, _KEY_ID: self._active.encode()},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded: list[Payload] = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                # Not ours (e.g. written before encryption was enabled): pass through untouched.
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(_KEY_ID, b"").decode()
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise PayloadKeyError(f"payload was encrypted with unknown key id {key_id!r}")
            nonce, sealed = payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:]
            decoded.append(Payload.FromString(cipher.decrypt(nonce, sealed, key_id.encode())))
        return decoded

"""AES-256-GCM payload codec: Temporal history holds only ciphertext of inputs, results and updates."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
_KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12


class PayloadKeyError(ValueError):
    """The configured payload keys are malformed, or a payload names a key we do not hold."""


def parse_payload_keys(spec: str) -> tuple[str, dict[str, bytes]]:
    """`kid1:base64key,kid2:base64key` -> (active key id, keys). The first key encrypts; all decrypt."""
    keys: dict[str, bytes] = {}
    active: str | None = None
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id:
            raise PayloadKeyError("payload keys are `key-id:base64-key`, comma-separated")
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError as err:
            raise PayloadKeyError(f"payload key {key_id!r} is not valid base64") from err
        if len(key) != 32:
            raise PayloadKeyError(f"payload key {key_id!r} must be 32 bytes (AES-256)")
        keys[key_id] = key
        active = active or key_id
    if active is None:
        raise PayloadKeyError("no payload key configured")
    return active, keys


def new_payload_key_spec(key_id: str = "k1") -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


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

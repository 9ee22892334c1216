"""Run content in audit events, sealed under the organization's data key, one derived key per event.

What a run says (step titles built from its input, comments, decision forms, results) is stored
in `audit_events.data` as `enc:c1:<org key id hex>:<event id hex>:<base64(nonce + ciphertext)>`:
AES-256-GCM under a key derived (HKDF-SHA256) from the organization's data key and the event's
id, with the field's name as associated data; the plaintext is the value's JSON. The chain hashes
the sealed string, so verification needs no key. An export for an auditor can carry one event's
derived key beside its plaintext: the auditor checks plaintext against ciphertext offline
(`blocks audit verify` with the export's revealed content) and never holds the organization's key.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CONTENT_PREFIX = "enc:c1:"
_NONCE_BYTES = 12


class SealedContent(NamedTuple):
    key_id: uuid.UUID
    event_id: uuid.UUID
    blob: bytes


def event_content_key(org_secret: bytes, org_id: uuid.UUID, event_id: uuid.UUID) -> bytes:
    """The key that seals one event's content fields, derived from the organization's data key
    (pure computation: the sandbox-safe core holds no key, callers hand it in)."""
    info = f"blocks.audit.content.v1|{org_id}|{event_id}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(org_secret)


def seal_value(
    event_key: bytes, key_id: uuid.UUID, event_id: uuid.UUID, name: str, value: Any
) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    sealed = AESGCM(event_key).encrypt(nonce, plaintext, name.encode())
    encoded = base64.b64encode(nonce + sealed).decode()
    return f"{CONTENT_PREFIX}{key_id.hex}:{event_id.hex}:{encoded}"


def parse_content(value: object) -> SealedContent | None:
    """The parts of a sealed content value; None if `value` is not one."""
    if not isinstance(value, str) or not value.startswith(CONTENT_PREFIX):
        return None
    parts = value[len(CONTENT_PREFIX) :].split(":")
    if len(parts) != 3:
        return None
    try:
        return SealedContent(
            uuid.UUID(hex=parts[0]),
            uuid.UUID(hex=parts[1]),
            base64.b64decode(parts[2], validate=True),
        )
    except ValueError:
        return None


def open_value(event_key: bytes, name: str, blob: bytes) -> Any:
    """The plaintext value; raises InvalidTag if the blob was altered or moved to another field."""
    plaintext = AESGCM(event_key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], name.encode())
    return json.loads(plaintext)


def content_line(
    event_id: str, event_key: bytes | None, revealed: dict[str, Any]
) -> dict[str, Any]:
    """An export's `content` line: one event's content in clear, with the key that opens its
    sealed fields (None where the organization's key was destroyed), for an auditor to check."""
    key = base64.b64encode(event_key).decode() if event_key is not None else None
    return {"type": "content", "id": event_id, "key": key, "data": revealed}


class ContentChecker:
    """Checks a revealed export's content lines against the sealed fields of their events.

    Events with sealed fields are held (their sealed values only) until their content line
    comes; the export writes a batch's content lines after its events, so at most a batch is
    held. `problem` is the first mismatch, as a sentence naming the event.
    """

    def __init__(self) -> None:
        self.checked = 0
        self.unopenable = 0  # fields whose key was destroyed before the export
        self.problem: tuple[str, str, int | None] | None = None  # (event id, message, line)
        self._pending: dict[str, dict[str, SealedContent]] = {}

    def event(self, event_id: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        sealed = {n: s for n, v in data.items() if (s := parse_content(v)) is not None}
        if sealed:
            self._pending[event_id] = sealed

    def content(self, value: dict[str, Any], line: int) -> None:
        if self.problem is not None:
            return
        event_id = value.get("id")
        sealed = self._pending.pop(event_id, None) if isinstance(event_id, str) else None
        if sealed is None:
            self.problem = (
                str(event_id),
                "a content line names no event with sealed content",
                line,
            )
            return
        revealed = value.get("data")
        if not isinstance(revealed, dict) or set(revealed) != set(sealed):
            self.problem = (event_id, "the content line does not reveal each sealed field", line)
            return
        if value.get("key") is None:
            self.unopenable += len(sealed)
            return
        try:
            key = base64.b64decode(value["key"], validate=True)
            for name, parts in sealed.items():
                if str(parts.event_id) != event_id and parts.event_id.hex != event_id:
                    raise ValueError(f"{name} was sealed for another event")
                if open_value(key, name, parts.blob) != revealed[name]:
                    raise ValueError(f"{name} in clear differs from what was sealed")
                self.checked += 1
        except (InvalidTag, ValueError, TypeError) as err:
            message = str(err) if not isinstance(err, InvalidTag) else "the key does not open it"
            self.problem = (event_id, f"revealed content does not match: {message}", line)

    def finish(self) -> None:
        if self.problem is None and self._pending:
            event_id = next(iter(self._pending))
            self.problem = (event_id, "an event with sealed content has no content line", None)

"""Key specs as configured: `kid1:base64key,kid2:base64key`, the first key active, all usable.

The payload keys (`BLOCKS_PAYLOAD_KEYS`) and the master keys (`BLOCKS_MASTER_KEYS`) share this
form, so rotation works the same way for both: add the new key first, keep the old ones.
"""

from __future__ import annotations

import base64
import os


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

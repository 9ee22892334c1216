"""AES-256-GCM for the audit log's personal fields: sealed values, data keys and the master keys.

A sealed field reads `enc:v1:<key id hex>:<base64(nonce + ciphertext)>`; its associated data
binds it to its organization, event and field name. Each person's data key is stored wrapped by
the active master key (BLOCKS_MASTER_KEYS), with associated data binding it to its master key,
organization, person and key id. `models.personal_data` keeps the keys and decides what to seal.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blocks.infra.crypto.dev_keys import configured_or_dev_key
from blocks.infra.crypto.key_specs import (
    PayloadKeyError,
    new_payload_key_spec,
    parse_payload_keys,
)
from blocks.infra.settings import Settings, get_settings

SEALED_PREFIX = "enc:v1:"
_NONCE_BYTES = 12


class MasterKeyError(ValueError):
    """BLOCKS_MASTER_KEYS is malformed, or a wrapped key names a master key we do not hold."""


# --- master keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MasterKeys:
    """Key-encryption keys: the first wraps new data keys, all unwrap (rotation)."""

    active_id: str
    ciphers: Mapping[str, AESGCM] = field(repr=False)

    @classmethod
    def parse(cls, spec: str) -> MasterKeys:
        try:
            active, keys = parse_payload_keys(spec)
        except PayloadKeyError as err:
            raise MasterKeyError(f"BLOCKS_MASTER_KEYS: {err}") from None
        if any(len(key_id) > 64 for key_id in keys):
            raise MasterKeyError("BLOCKS_MASTER_KEYS: key ids are at most 64 characters")
        return cls(active, {key_id: AESGCM(key) for key_id, key in keys.items()})

    def wrap(self, org_id: uuid.UUID, user_id: uuid.UUID, key_id: uuid.UUID, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        aad = _wrap_aad(self.active_id, org_id, user_id, key_id)
        return nonce + self.ciphers[self.active_id].encrypt(nonce, key, aad)

    def unwrap_data_key(
        self,
        master_key_id: str,
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        key_id: uuid.UUID,
        wrapped: bytes,
    ) -> DataKey:
        cipher = self.ciphers.get(master_key_id)
        if cipher is None:
            raise MasterKeyError(f"a data key is wrapped by unknown master key {master_key_id!r}")
        aad = _wrap_aad(master_key_id, org_id, user_id, key_id)
        key = cipher.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], aad)
        return DataKey(key_id, AESGCM(key))

    def rewrap_data_key(
        self,
        master_key_id: str,
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        key_id: uuid.UUID,
        wrapped: bytes,
    ) -> bytes:
        """A person's data key wrapped by `master_key_id`, wrapped again by the active key
        (`blocks keys rotate`): the data key itself, and what it sealed, do not change."""
        cipher = self.ciphers.get(master_key_id)
        if cipher is None:
            raise MasterKeyError(f"a data key is wrapped by unknown master key {master_key_id!r}")
        aad = _wrap_aad(master_key_id, org_id, user_id, key_id)
        key = cipher.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], aad)
        return self.wrap(org_id, user_id, key_id, key)

    def reseal_secret(self, master_key_id: str, binding: str, sealed: bytes) -> tuple[str, bytes]:
        """A sealed secret sealed again under the active key (`blocks keys rotate`)."""
        return self.seal_secret(binding, self.open_secret(master_key_id, binding, sealed))

    def seal_secret(self, binding: str, secret: str) -> tuple[str, bytes]:
        """(master key id, nonce + ciphertext) of a stored credential, such as a chat bot token.

        `binding` names what the secret belongs to (its kind and owner); it is associated data,
        so a sealed secret copied to another row or purpose does not open.
        """
        nonce = os.urandom(_NONCE_BYTES)
        aad = _secret_aad(self.active_id, binding)
        return self.active_id, nonce + self.ciphers[self.active_id].encrypt(
            nonce, secret.encode(), aad
        )

    def open_secret(self, master_key_id: str, binding: str, sealed: bytes) -> str:
        """The plaintext of `seal_secret`'s output; raises InvalidTag if it was moved or altered."""
        cipher = self.ciphers.get(master_key_id)
        if cipher is None:
            raise MasterKeyError(f"a secret is sealed by unknown master key {master_key_id!r}")
        aad = _secret_aad(master_key_id, binding)
        return cipher.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad).decode()


def _secret_aad(master_key_id: str, binding: str) -> bytes:
    return f"blocks.secret.v1|{master_key_id}|{binding}".encode()


def _wrap_aad(
    master_key_id: str, org_id: uuid.UUID, user_id: uuid.UUID, key_id: uuid.UUID
) -> bytes:
    # A wrapped key only opens as the key of the person, organization and key id it was made for.
    return f"blocks.subject-key.v1|{master_key_id}|{org_id}|{user_id}|{key_id}".encode()


def master_key_spec(settings: Settings) -> str:
    return configured_or_dev_key(
        settings.master_keys,
        settings,
        variable="BLOCKS_MASTER_KEYS",
        file_name="master-keys",
        new_spec=new_payload_key_spec,
        error=MasterKeyError,
    )


def load_master_keys(settings: Settings) -> MasterKeys:
    return MasterKeys.parse(master_key_spec(settings))


# `append_events(ctx, session, records)` is the one append path for the API, activities and
# tools, and the master key is process configuration (like the payload codec's keys), so it is
# installed once per process: by `create_app`, or on first use from the process's settings.
_installed: MasterKeys | None = None


def install_master_keys(keys: MasterKeys) -> None:
    global _installed
    _installed = keys


def current_master_keys() -> MasterKeys:
    keys = _installed
    if keys is None:
        keys = load_master_keys(get_settings())
        install_master_keys(keys)
    return keys


# --- data keys and sealed fields -----------------------------------------------------------


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _field_aad(org_id: uuid.UUID, event_id: uuid.UUID, name: str) -> bytes:
    # Bound to its organization, event and field: a ciphertext moved anywhere else fails to open.
    return f"blocks.audit.personal.v1|{org_id}|{event_id}|{name}".encode()


@dataclass(frozen=True)
class DataKey:
    """One person's data key in one organization, unwrapped: seals and opens their fields."""

    key_id: uuid.UUID
    cipher: AESGCM

    def seal(self, org_id: uuid.UUID, event_id: uuid.UUID, name: str, value: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self.cipher.encrypt(nonce, value.encode(), _field_aad(org_id, event_id, name))
        return f"{SEALED_PREFIX}{self.key_id.hex}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, org_id: uuid.UUID, event_id: uuid.UUID, name: str, blob: bytes) -> str | None:
        """The plaintext of a sealed field's `blob`; None if it does not decrypt (altered or
        moved)."""
        try:
            aad = _field_aad(org_id, event_id, name)
            return self.cipher.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad).decode()
        except (InvalidTag, UnicodeDecodeError):
            return None


def parse_sealed(value: str) -> tuple[uuid.UUID, bytes] | None:
    """(key id, blob) of a sealed field; None if `value` is not in the sealed form."""
    if not value.startswith(SEALED_PREFIX):
        return None
    key_hex, sep, encoded = value[len(SEALED_PREFIX) :].partition(":")
    if not sep:
        return None
    try:
        return uuid.UUID(hex=key_hex), base64.b64decode(encoded, validate=True)
    except ValueError:
        return None

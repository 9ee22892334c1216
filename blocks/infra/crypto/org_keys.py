"""Per-organization data keys: how one is wrapped by a master key, and where a process finds them.

Each organization's data key (AES-256) seals what its runs hold: Temporal payloads (the codec)
and, as later issues land, run content and credentials. The key is stored wrapped by the active
master key, with associated data binding it to that master key, its organization and its key id,
so a wrapped key copied to another organization's row does not open. `models.keys.org_keys`
keeps the table; this module is the crypto and the process-wide handle the codec reaches for.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blocks.infra.crypto.field_crypto import MasterKeyError, MasterKeys

if TYPE_CHECKING:  # run_keys imports OrgDataKey from here
    from blocks.infra.crypto.run_keys import RunDataKey

_NONCE_BYTES = 12


class OrgKeyUnavailable(LookupError):
    """An organization's data key is not there to use: destroyed (shredded) or never existed."""


@dataclass(frozen=True)
class OrgDataKey:
    """One organization's data key, unwrapped: `cipher` seals payloads and credentials, and
    `secret` derives one key per audit event for run content (`content_crypto`)."""

    key_id: uuid.UUID
    org_id: uuid.UUID
    secret: bytes = field(repr=False)
    cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cipher", AESGCM(self.secret))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """nonce + AES-GCM ciphertext of `plaintext`, bound to `aad` (what the row is for): the
        form every sealed column of an organization's data has."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self.cipher.encrypt(nonce, plaintext, aad)

    def open_sealed(self, sealed: bytes, aad: bytes) -> bytes:
        """What `seal` sealed under the same `aad` (cryptography's InvalidTag otherwise)."""
        return self.cipher.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad)


def _wrap_aad(master_key_id: str, org_id: uuid.UUID, key_id: uuid.UUID) -> bytes:
    return f"blocks.org-key.v1|{master_key_id}|{org_id}|{key_id}".encode()


def wrap_org_key(master: MasterKeys, org_id: uuid.UUID, key_id: uuid.UUID, key: bytes) -> bytes:
    """nonce + ciphertext of `key` under the active master key."""
    nonce = os.urandom(_NONCE_BYTES)
    aad = _wrap_aad(master.active_id, org_id, key_id)
    return nonce + master.ciphers[master.active_id].encrypt(nonce, key, aad)


def unwrap_org_key(
    master: MasterKeys, master_key_id: str, org_id: uuid.UUID, key_id: uuid.UUID, wrapped: bytes
) -> bytes:
    """The raw key; raises MasterKeyError for a master key we do not hold, InvalidTag if the
    wrapped key was altered or moved."""
    cipher = master.ciphers.get(master_key_id)
    if cipher is None:
        raise MasterKeyError(
            f"organization {org_id}'s data key is wrapped by master key {master_key_id!r},"
            " which BLOCKS_MASTER_KEYS does not hold"
        )
    aad = _wrap_aad(master_key_id, org_id, key_id)
    return cipher.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], aad)


def rewrap_org_key(
    master: MasterKeys, master_key_id: str, org_id: uuid.UUID, key_id: uuid.UUID, wrapped: bytes
) -> bytes:
    """An organization's key wrapped by `master_key_id`, wrapped again by the active master key
    (`blocks keys rotate`): the data key, and everything it sealed, stay as they are."""
    return wrap_org_key(
        master, org_id, key_id, unwrap_org_key(master, master_key_id, org_id, key_id, wrapped)
    )


class OrgKeySource(Protocol):
    """Where the payload codec finds a run's organization and that organization's keys."""

    async def run_org(self, workflow_id: str) -> uuid.UUID | None:
        """The organization a workflow id belongs to; None for Blocks' own workflows."""
        ...

    async def active_key(self, org_id: uuid.UUID) -> OrgDataKey:
        """The key new data of `org_id` is sealed with (created on first use)."""
        ...

    async def key(self, org_id: uuid.UUID, key_id: uuid.UUID) -> OrgDataKey:
        """A key by id, for reading; raises OrgKeyUnavailable if it was destroyed."""
        ...

    async def run_key(self, org_id: uuid.UUID, workflow_id: str) -> RunDataKey:
        """The run's own history key (`infra.crypto.run_keys`), created on first use; raises
        OrgKeyUnavailable once it was destroyed (the run closed)."""
        ...

    async def run_key_by_id(self, org_id: uuid.UUID, key_id: uuid.UUID) -> RunDataKey:
        """A run's history key by id, for reading; OrgKeyUnavailable once destroyed."""
        ...


# Like the master keys, the key source is process configuration: the API, the worker and the
# CLI install theirs (a database-backed one) at start; a process without one (the authoring
# kit without PostgreSQL) seals payloads under the payload keys alone.
_installed: OrgKeySource | None = None


def install_org_keys(source: OrgKeySource | None) -> None:
    global _installed
    _installed = source


def installed_org_keys() -> OrgKeySource | None:
    return _installed

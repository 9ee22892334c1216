"""Per-run history keys: the key an LLM step's prompt and reply are sealed under in Temporal history.

A run that calls a model gets its own AES-256 key on first use, wrapped by its organization's
data key (associated data binds organization, workflow id, run key id and the wrapping key's id,
so a wrapped key moved to another run's row does not open). The key is destroyed a grace period
after the run closes (`models.keys.run_keys`): from then on the prompts and replies in the run's
history are ciphertext nobody can open, which is what "prompts are not kept beyond the run" means
for Temporal. Everything else the run holds stays under the organization key.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blocks.infra.crypto.org_keys import OrgDataKey

_NONCE_BYTES = 12
# The activity whose input, result and failure are sealed under the run's key, not the
# organization's: the LLM step's model call (blocks.activities.llm names itself with this).
LLM_CALL_ACTIVITY = "blocks.llm.call"
RUN_SCOPED_ACTIVITIES = frozenset({LLM_CALL_ACTIVITY})


@dataclass(frozen=True)
class RunDataKey:
    """One run's history key, unwrapped."""

    key_id: uuid.UUID
    org_id: uuid.UUID
    workflow_id: str
    secret: bytes = field(repr=False)
    cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cipher", AESGCM(self.secret))


def _wrap_aad(org_key: OrgDataKey, workflow_id: str, key_id: uuid.UUID) -> bytes:
    return f"blocks.run-key.v1|{org_key.org_id}|{workflow_id}|{key_id}|{org_key.key_id}".encode()


def wrap_run_key(org_key: OrgDataKey, workflow_id: str, key_id: uuid.UUID, key: bytes) -> bytes:
    """nonce + ciphertext of a run's key under its organization's data key."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + org_key.cipher.encrypt(nonce, key, _wrap_aad(org_key, workflow_id, key_id))


def unwrap_run_key(
    org_key: OrgDataKey, workflow_id: str, key_id: uuid.UUID, wrapped: bytes
) -> RunDataKey:
    """The run's key; raises InvalidTag if the wrapped key was altered or moved."""
    aad = _wrap_aad(org_key, workflow_id, key_id)
    secret = org_key.cipher.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], aad)
    return RunDataKey(key_id=key_id, org_id=org_key.org_id, workflow_id=workflow_id, secret=secret)

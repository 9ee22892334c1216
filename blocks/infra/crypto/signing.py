"""Ed25519 keys that sign audit checkpoints: loaded from settings, or generated once in dev."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from blocks.infra.crypto.dev_keys import configured_or_dev_key
from blocks.infra.settings import Settings


class SigningKeyError(ValueError):
    """The configured signing key is malformed or missing."""


@dataclass(frozen=True)
class CheckpointSigner:
    key_id: str
    private_key: Ed25519PrivateKey

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private_key.sign(message)).decode()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_key_b64(self) -> str:
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def public_jwk(self) -> dict[str, str]:
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": self.key_id,
            "use": "sig",
            "alg": "EdDSA",
        }


def parse_signing_key(spec: str) -> CheckpointSigner:
    """`key-id:base64(32-byte Ed25519 seed)`."""
    key_id, sep, encoded = spec.strip().partition(":")
    if not sep or not key_id:
        raise SigningKeyError("the audit signing key is `key-id:base64-seed`")
    try:
        seed = base64.b64decode(encoded, validate=True)
    except ValueError as err:
        raise SigningKeyError("the audit signing key is not valid base64") from err
    if len(seed) != 32:
        raise SigningKeyError("the audit signing key must be a 32-byte Ed25519 seed")
    return CheckpointSigner(key_id=key_id, private_key=Ed25519PrivateKey.from_private_bytes(seed))


def new_signing_key_spec(key_id: str = "s1") -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def load_signer(settings: Settings) -> CheckpointSigner:
    return parse_signing_key(
        configured_or_dev_key(
            settings.audit_signing_key,
            settings,
            variable="BLOCKS_AUDIT_SIGNING_KEY",
            file_name="audit-signing-key",
            new_spec=new_signing_key_spec,
            error=SigningKeyError,
        )
    )


def verify_signature(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    """Offline check of a checkpoint signature with a published public key."""
    try:
        public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        public_key.verify(base64.b64decode(signature_b64), message)
    except (InvalidSignature, ValueError):
        return False
    return True

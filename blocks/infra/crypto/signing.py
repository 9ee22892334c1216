"""Ed25519 keys that sign audit checkpoints: loaded from settings, or generated once in dev.

The private key lives only where signing runs (the worker). The API publishes and verifies with
the public keys alone (`BLOCKS_AUDIT_PUBLIC_KEYS`, which also keeps retired keys verifiable after
a rotation); in dev and test, where one process may hold both, they are derived from the key.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from blocks.infra.crypto.dev_keys import configured_or_dev_key
from blocks.infra.settings import Environment, Settings


class SigningKeyError(ValueError):
    """The configured signing key is malformed or missing."""


@dataclass(frozen=True)
class CheckpointSigner:
    key_id: str
    private_key: Ed25519PrivateKey

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private_key.sign(message)).decode()

    def public(self) -> CheckpointPublicKey:
        return CheckpointPublicKey(self.key_id, self.private_key.public_key())


@dataclass(frozen=True)
class CheckpointPublicKey:
    key_id: str
    public_key: Ed25519PublicKey

    def b64(self) -> str:
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def jwk(self) -> dict[str, str]:
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


@dataclass(frozen=True)
class CheckpointPublicKeys:
    """The keys checkpoints are verified with: the current one first, then retired ones."""

    keys: tuple[CheckpointPublicKey, ...]

    @property
    def current(self) -> CheckpointPublicKey:
        return self.keys[0]

    def by_id(self) -> dict[str, str]:
        return {key.key_id: key.b64() for key in self.keys}


def parse_public_keys(spec: str) -> CheckpointPublicKeys:
    """`key-id:base64(32-byte raw Ed25519 public key)`, comma-separated, the current one first."""
    keys: list[CheckpointPublicKey] = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id:
            raise SigningKeyError(
                "audit public keys are `key-id:base64-public-key`, comma-separated"
            )
        try:
            raw = base64.b64decode(encoded, validate=True)
            public_key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as err:
            raise SigningKeyError(
                f"audit public key {key_id!r} is not a base64 Ed25519 key"
            ) from err
        keys.append(CheckpointPublicKey(key_id, public_key))
    if not keys:
        raise SigningKeyError("no audit public key configured")
    return CheckpointPublicKeys(tuple(keys))


def load_public_keys(settings: Settings) -> CheckpointPublicKeys:
    """What the API needs to publish and verify checkpoints, without the signing key.

    In production the public keys must be configured: the signing key belongs to the worker.
    Elsewhere, unset public keys are derived from the (dev) signing key.
    """
    if settings.audit_public_keys is not None:
        return parse_public_keys(settings.audit_public_keys)
    if settings.env is Environment.PROD:
        raise SigningKeyError(
            "BLOCKS_AUDIT_PUBLIC_KEYS must be set in production: the API publishes and verifies "
            "checkpoints with public keys only (`blocks audit public-key` prints the worker's)"
        )
    signer = load_signer(settings)
    return CheckpointPublicKeys((signer.public(),))


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

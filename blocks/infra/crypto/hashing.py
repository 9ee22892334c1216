"""Token secrets (API keys, sessions, emailed links): 256 random bits, stored as SHA-256, compared
in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "blk"


@dataclass(frozen=True)
class IssuedKey:
    lookup: str  # public part, indexed, identifies the row
    secret_hash: str
    plaintext: str  # shown once, never stored


def issue_api_key() -> IssuedKey:
    return issue_token(KEY_PREFIX)


def issue_token(prefix: str) -> IssuedKey:
    """`<prefix>_<lookup>_<secret>`: the lookup finds the row, the secret is stored hashed."""
    # 256 random bits: a fast hash is safe for secrets of this strength (unlike passwords).
    lookup = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(
        lookup=lookup, secret_hash=hash_secret(secret), plaintext=f"{prefix}_{lookup}_{secret}"
    )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def split_api_key(token: str) -> tuple[str, str] | None:
    return split_token(token, KEY_PREFIX)


def split_token(token: str, prefix: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != prefix or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


_DUMMY_HASH = hash_secret("timing-equaliser")


def presented_secret_matches(secret: str | None, stored_hash: str | None) -> bool:
    """One constant-time comparison whatever happened before: a malformed token (`secret` None)
    or a lookup id that found no row (`stored_hash` None) is compared against a dummy, so a miss
    takes as long as a wrong secret and timing tells nothing about which lookups exist."""
    matched = secret_matches(secret or "", stored_hash or _DUMMY_HASH)
    return matched and secret is not None and stored_hash is not None

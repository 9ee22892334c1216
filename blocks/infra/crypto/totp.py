"""Two-factor primitives: TOTP secrets, replay-safe code verification, and one-time backup codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

import pyotp

TOTP_DIGITS = 6
TOTP_INTERVAL_SECONDS = 30
# One step either side tolerates clock drift between the server and the user's device.
TOTP_DRIFT_STEPS = 1

BACKUP_CODE_COUNT = 10
_BACKUP_CODE_BYTES = 10  # 80 random bits -> exactly 16 base32 characters, no padding
_BACKUP_CODE_LENGTH = 16

_TOTP_CODE_RE = re.compile(r"[0-9]{6}")  # ASCII digits only; str.isdigit accepts e.g. "٣"
_BACKUP_CODE_RE = re.compile(r"[a-z2-7]{16}")


def new_totp_secret() -> str:
    """A new base32 TOTP secret: 32 characters, 160 random bits."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, *, account: str, issuer: str = "Blocks") -> str:
    """The otpauth:// URI an authenticator app scans (usually shown as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def totp_counter(now: datetime) -> int:
    """The 30-second time step containing now (must be timezone-aware)."""
    # A naive datetime would be read as server-local time and silently shift the step.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return int(now.timestamp()) // TOTP_INTERVAL_SECONDS


def _normalize_totp_code(code: str) -> str | None:
    # Authenticator apps often display "123 456"; spaces are the only tolerated separator.
    digits = code.replace(" ", "")
    return digits if _TOTP_CODE_RE.fullmatch(digits) else None


def verify_totp(
    secret: str, code: str, *, last_used_counter: int | None, now: datetime
) -> int | None:
    """Return the time step the code matches, or None if refused.

    A code is accepted for the current step or one step either side, and only if that step is
    strictly later than last_used_counter: the caller stores the returned counter, so a code
    (or any older code) can never be used twice.
    """
    digits = _normalize_totp_code(code)
    if digits is None:
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL_SECONDS)
    current = totp_counter(now)
    matched: int | None = None
    # Every candidate is computed and compared (no early exit), so timing doesn't reveal
    # which step matched or how close a guess came.
    for counter in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        expected = totp.generate_otp(counter)
        if hmac.compare_digest(expected.encode("ascii"), digits.encode("ascii")):
            # Later steps win: if a code collides across steps, prefer the one not yet used.
            matched = counter
    if matched is None:
        return None
    if last_used_counter is not None and matched <= last_used_counter:
        return None
    return matched


def new_backup_codes() -> list[str]:
    """BACKUP_CODE_COUNT fresh codes, each 80 random bits shown as xxxx-xxxx-xxxx-xxxx."""
    codes: list[str] = []
    while len(codes) < BACKUP_CODE_COUNT:
        raw = base64.b32encode(secrets.token_bytes(_BACKUP_CODE_BYTES)).decode("ascii").lower()
        code = "-".join(raw[i : i + 4] for i in range(0, _BACKUP_CODE_LENGTH, 4))
        # A duplicate is astronomically unlikely, but the count of usable codes must hold.
        if code not in codes:
            codes.append(code)
    return codes


def normalize_backup_code(code: str) -> str | None:
    """The code's 16 lowercase base32 characters (spaces/dashes removed), or None if malformed."""
    cleaned = code.replace(" ", "").replace("-", "").lower()
    return cleaned if _BACKUP_CODE_RE.fullmatch(cleaned) else None


def hash_backup_code(code: str) -> str:
    """SHA-256 hex of the normalized code; raises ValueError if the code is malformed."""
    normalized = normalize_backup_code(code)
    if normalized is None:
        raise ValueError("malformed backup code")
    # 80 random bits can't be brute-forced from the hash, so a fast hash is adequate here
    # (unlike passwords, which need argon2).
    return hashlib.sha256(normalized.encode("ascii")).hexdigest()


def backup_code_matches(code: str, stored_hash: str) -> bool:
    """Whether code is the backup code stored as stored_hash, compared in constant time."""
    normalized = normalize_backup_code(code)
    if normalized is None:
        return False
    candidate = hashlib.sha256(normalized.encode("ascii")).hexdigest()
    return hmac.compare_digest(candidate.encode("ascii"), stored_hash.encode("utf-8"))

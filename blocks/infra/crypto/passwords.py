"""Password hashing (argon2id) and the policy deciding which new passwords are acceptable."""

from __future__ import annotations

from collections.abc import Sequence

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from blocks.infra.lazy_modules import lazy_module

# Its word lists take about 12 MB once loaded: loaded at the first new password a process checks,
# not by every process that imports this module (the worker, an API that only sees API keys).
zxcvbn = lazy_module("zxcvbn")

MIN_PASSWORD_LENGTH = 12
# Bounds the work done per password (argon2 pre-hashing, zxcvbn) while leaving room for
# passphrases and password-manager output well beyond 64 characters.
MAX_PASSWORD_LENGTH = 1024
# zxcvbn's matching grows quickly with length (the library itself refuses > 72 by default).
ZXCVBN_PREFIX_LENGTH = 100
MIN_ZXCVBN_SCORE = 3

# One instance so every hash uses the same parameters; pwdlib reports a rehash when the
# parameters stored in a hash differ from these, letting us upgrade hashes at login.
_password_hash = PasswordHash((Argon2Hasher(),))

# Verified against when there is no stored hash (unknown email, user without a password),
# so that case costs the same argon2 work and response times don't reveal which accounts exist.
_DUMMY_HASH = _password_hash.hash("blocks-dummy-password-for-constant-time-verification")


def hash_password(password: str) -> str:
    """Hash a password with argon2id; the password is used exactly as given."""
    # No strip or Unicode normalization: the user's exact characters are the secret, and
    # normalizing would make distinct passwords collide.
    return _password_hash.hash(password)


def verify_password(password: str, stored_hash: str | None) -> tuple[bool, str | None]:
    """Return (matches, new_hash) where new_hash is set when the stored hash should be replaced.

    Raises pwdlib's UnknownHashError if stored_hash is not a hash we recognise (corrupt data).
    """
    if stored_hash is None:
        _password_hash.verify(password, _DUMMY_HASH)
        return False, None
    matches, new_hash = _password_hash.verify_and_update(password, stored_hash)
    if not matches:
        return False, None
    return True, new_hash


def _expand_user_inputs(user_inputs: Sequence[str]) -> list[str]:
    """The given inputs plus their obvious pieces: an email's local part and domain, name words."""
    words: list[str] = []
    for item in user_inputs:
        item = item.strip()
        if not item:
            continue
        words.append(item)
        if "@" in item:
            local, _, domain = item.rpartition("@")
            words.extend(part for part in (local, domain, domain.split(".")[0]) if part)
        parts = item.split()
        if len(parts) > 1:
            words.extend(parts)
    # zxcvbn compares case-insensitively; dedupe while keeping order for determinism.
    return list(dict.fromkeys(word.lower() for word in words))


def password_problem(password: str, *, user_inputs: Sequence[str] = ()) -> str | None:
    """Return why a new password is refused (a phrase to follow "Password ..."), or None if fine.

    user_inputs are things an attacker would know about the user (email, display name) so that
    passwords built from them are refused.
    """
    # len() counts code points, not UTF-8 bytes, so non-ASCII passwords aren't favoured/penalized.
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    # zxcvbn is slow on long inputs, so only the prefix is scored. That is fine: for our
    # purposes a longer password is at least as strong as its prefix, and the hash still
    # covers the whole password.
    prefix = password[:ZXCVBN_PREFIX_LENGTH]
    result = zxcvbn.zxcvbn(
        prefix, user_inputs=_expand_user_inputs(user_inputs), max_length=ZXCVBN_PREFIX_LENGTH
    )
    if result["score"] < MIN_ZXCVBN_SCORE:
        feedback = result.get("feedback") or {}
        hint = feedback.get("warning") or next(iter(feedback.get("suggestions") or []), "")
        reason = "is too common or easy to guess"
        return f"{reason}: {hint}" if hint else reason
    return None

"""Password hashing round trips exactly (no normalization) and the policy refuses weak passwords."""

from __future__ import annotations

import secrets
import unicodedata

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from blocks.infra.crypto import passwords
from blocks.infra.crypto.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    hash_password,
    password_problem,
    verify_password,
)

STRONG = "violet-harbor-quantum-pickle-88"


def test_hash_is_argon2id_and_salted() -> None:
    first = hash_password(STRONG)
    second = hash_password(STRONG)
    assert first.startswith("$argon2id$")
    assert first != second
    assert STRONG not in first


def test_round_trip_verifies() -> None:
    assert verify_password(STRONG, hash_password(STRONG)) == (True, None)


def test_wrong_password_refused() -> None:
    stored = hash_password(STRONG)
    assert verify_password(STRONG + "x", stored) == (False, None)
    assert verify_password(STRONG.upper(), stored) == (False, None)
    assert verify_password("", stored) == (False, None)


def test_long_password_is_accepted_and_verified_in_full() -> None:
    password = secrets.token_urlsafe(75)[:100]
    assert len(password) == 100
    assert password_problem(password) is None
    stored = hash_password(password)
    assert verify_password(password, stored) == (True, None)
    # The final character matters: nothing is truncated before hashing.
    assert (
        verify_password(password[:-1] + ("A" if password[-1] != "A" else "B"), stored)[0] is False
    )
    assert verify_password(password[:99], stored)[0] is False


def test_trailing_space_is_significant() -> None:
    stored = hash_password(STRONG + " ")
    assert verify_password(STRONG, stored) == (False, None)
    assert verify_password(STRONG + " ", stored) == (True, None)
    assert verify_password(" " + STRONG, hash_password(STRONG))[0] is False


def test_unicode_is_not_normalized() -> None:
    composed = unicodedata.normalize("NFC", "café-harbor-quantum-88")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    stored = hash_password(composed)
    assert verify_password(composed, stored) == (True, None)
    assert verify_password(decomposed, stored) == (False, None)


def test_none_hash_refused() -> None:
    assert verify_password(STRONG, None) == (False, None)
    assert verify_password("", None) == (False, None)


def test_none_hash_still_does_argon2_work(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_verify = passwords._password_hash.verify

    def spy(password: str | bytes, hash: str | bytes) -> bool:
        calls.append(str(hash))
        return real_verify(password, hash)

    monkeypatch.setattr(passwords._password_hash, "verify", spy)
    assert verify_password(STRONG, None) == (False, None)
    assert len(calls) == 1
    assert calls[0].startswith("$argon2id$")


def test_outdated_hash_gets_a_rehash() -> None:
    weaker = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1),))
    old = weaker.hash(STRONG)
    ok, new_hash = verify_password(STRONG, old)
    assert ok is True
    assert new_hash is not None
    assert new_hash != old
    assert verify_password(STRONG, new_hash) == (True, None)
    # A wrong password never yields a new hash.
    assert verify_password("wrong-" + STRONG, old) == (False, None)


@pytest.mark.parametrize("password", ["password123456", "qwertyuiop123", "aaaaaaaaaaaaaaaa"])
def test_common_passwords_refused(password: str) -> None:
    problem = password_problem(password)
    assert problem is not None
    assert problem.startswith("is too common or easy to guess")


def test_common_password_reason_includes_zxcvbn_warning() -> None:
    assert password_problem("qwertyuiop123") == (
        "is too common or easy to guess: This is a very common password."
    )


@pytest.mark.parametrize("password", ["", "short", "Xq9!vR2#mL7"])
def test_short_refused(password: str) -> None:
    assert password_problem(password) == f"must be at least {MIN_PASSWORD_LENGTH} characters"


def test_length_counts_characters_not_bytes() -> None:
    # 11 characters but 33 UTF-8 bytes: still too short.
    assert password_problem("猫犬鳥魚馬牛羊豚鶏鹿熊") == "must be at least 12 characters"


def test_too_long_refused() -> None:
    password = secrets.token_urlsafe(MAX_PASSWORD_LENGTH)[: MAX_PASSWORD_LENGTH + 1]
    assert len(password) == MAX_PASSWORD_LENGTH + 1
    assert password_problem(password) == f"must be at most {MAX_PASSWORD_LENGTH} characters"
    assert password_problem(password[:MAX_PASSWORD_LENGTH]) is None


def test_password_built_from_email_refused() -> None:
    email = "alice@example.com"
    password = "alice@example.com2024!"
    # Strong-looking to zxcvbn on its own; weak once it knows who the user is.
    assert password_problem(password) is None
    problem = password_problem(password, user_inputs=[email, "alice", "Alice Liddell"])
    assert problem is not None
    assert problem.startswith("is too common or easy to guess")


def test_email_local_part_derived_from_email() -> None:
    # Only the email is given; the local part is still recognised.
    assert password_problem("Alice@example.com!!", user_inputs=["alice@example.com"]) is not None


def test_random_passphrase_accepted() -> None:
    words = ["harbor", "quantum", "pickle", "violet", "glacier", "tundra", "saffron", "lantern"]
    rng = secrets.SystemRandom()
    passphrase = "-".join(rng.sample(words, 5)) + str(rng.randrange(10, 100))
    assert password_problem(passphrase, user_inputs=["alice@example.com", "Alice"]) is None
    assert password_problem(secrets.token_urlsafe(16)) is None

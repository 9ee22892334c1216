"""TOTP verification accepts drift but never a replay, and backup codes are random and one-shot."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from blocks.infra.crypto.totp import (
    BACKUP_CODE_COUNT,
    backup_code_matches,
    hash_backup_code,
    new_backup_codes,
    new_totp_secret,
    normalize_backup_code,
    provisioning_uri,
    totp_counter,
    verify_totp,
)

# Mid-step, so ±1 step is unambiguous.
NOW = datetime(2026, 3, 2, 9, 0, 15, tzinfo=UTC)
STEP = timedelta(seconds=30)


@pytest.fixture
def secret() -> str:
    return new_totp_secret()


def code_at(secret: str, when: datetime) -> str:
    return pyotp.TOTP(secret).at(when)


def test_secret_is_160_bits_base32() -> None:
    secret = new_totp_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert new_totp_secret() != secret


def test_provisioning_uri(secret: str) -> None:
    uri = provisioning_uri(secret, account="alice@example.com")
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth"
    assert parsed.netloc == "totp"
    assert "alice%40example.com" in parsed.path
    query = parse_qs(parsed.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["Blocks"]
    assert parse_qs(urlparse(provisioning_uri(secret, account="a", issuer="Acme")).query)[
        "issuer"
    ] == ["Acme"]


def test_counter_is_30_second_step() -> None:
    assert totp_counter(NOW) == int(NOW.timestamp()) // 30
    assert totp_counter(NOW + STEP) == totp_counter(NOW) + 1
    assert totp_counter(NOW.replace(second=0)) == totp_counter(NOW.replace(second=29))


def test_counter_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        totp_counter(datetime(2026, 3, 2, 9, 0, 15))


def test_current_code_accepted(secret: str) -> None:
    code = code_at(secret, NOW)
    assert verify_totp(secret, code, last_used_counter=None, now=NOW) == totp_counter(NOW)


def test_code_with_inner_space_accepted(secret: str) -> None:
    code = code_at(secret, NOW)
    spaced = f"{code[:3]} {code[3:]}"
    assert verify_totp(secret, spaced, last_used_counter=None, now=NOW) == totp_counter(NOW)


def test_same_code_cannot_be_replayed(secret: str) -> None:
    code = code_at(secret, NOW)
    used = verify_totp(secret, code, last_used_counter=None, now=NOW)
    assert used is not None
    assert verify_totp(secret, code, last_used_counter=used, now=NOW) is None
    # Still refused a step later, while the code is within the drift window.
    assert verify_totp(secret, code, last_used_counter=used, now=NOW + STEP) is None


def test_older_code_refused_after_newer_used(secret: str) -> None:
    current = totp_counter(NOW)
    previous_code = code_at(secret, NOW - STEP)
    assert verify_totp(secret, previous_code, last_used_counter=current, now=NOW) is None


def test_previous_step_accepted_when_last_is_older(secret: str) -> None:
    current = totp_counter(NOW)
    previous_code = code_at(secret, NOW - STEP)
    assert verify_totp(secret, previous_code, last_used_counter=current - 2, now=NOW) == current - 1


def test_next_step_accepted(secret: str) -> None:
    next_code = code_at(secret, NOW + STEP)
    assert verify_totp(secret, next_code, last_used_counter=None, now=NOW) == totp_counter(NOW) + 1


def test_code_two_steps_away_refused(secret: str) -> None:
    current = pyotp.TOTP(secret).at(NOW)
    for offset in (-2, 2):
        code = code_at(secret, NOW + offset * STEP)
        if code == current:  # 1-in-a-million collision would make the check meaningless
            continue
        assert verify_totp(secret, code, last_used_counter=None, now=NOW) is None


def test_code_for_other_secret_refused(secret: str) -> None:
    other = new_totp_secret()
    code = code_at(other, NOW)
    if code in {code_at(secret, NOW + k * STEP) for k in (-1, 0, 1)}:
        pytest.skip("random collision")
    assert verify_totp(secret, code, last_used_counter=None, now=NOW) is None


@pytest.mark.parametrize(
    "bad",
    ["12345", "abcdef", "1234567", "", "12-3456", "١٢٣٤٥٦", "123456\n", "12345a"],
)
def test_malformed_codes_refused(secret: str, bad: str) -> None:
    assert verify_totp(secret, bad, last_used_counter=None, now=NOW) is None


def test_malformed_code_refused_even_if_digits_match(secret: str) -> None:
    code = code_at(secret, NOW)
    assert verify_totp(secret, code + "0", last_used_counter=None, now=NOW) is None
    assert verify_totp(secret, "0" + code, last_used_counter=None, now=NOW) is None


def test_backup_codes_unique_and_formatted() -> None:
    codes = new_backup_codes()
    assert BACKUP_CODE_COUNT == 10
    assert len(codes) == BACKUP_CODE_COUNT
    assert len(set(codes)) == BACKUP_CODE_COUNT
    for code in codes:
        assert re.fullmatch(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}", code), code
    assert set(new_backup_codes()).isdisjoint(codes)


def test_normalize_backup_code() -> None:
    code = new_backup_codes()[0]
    bare = code.replace("-", "")
    assert normalize_backup_code(code) == bare
    assert normalize_backup_code(code.upper()) == bare
    assert normalize_backup_code(" ".join(code.upper().split("-"))) == bare
    assert normalize_backup_code(f"  {bare[:8]} {bare[8:]}  ") == bare


@pytest.mark.parametrize(
    "bad", ["", "abcd-efgh-ijkl-mno", "abcd-efgh-ijkl-mnop-q", "abcd-efgh-ijkl-mn01", "ab!d" * 4]
)
def test_normalize_refuses_malformed(bad: str) -> None:
    assert normalize_backup_code(bad) is None


def test_backup_code_hash_matches() -> None:
    code = new_backup_codes()[0]
    stored = hash_backup_code(code)
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
    assert hash_backup_code(code.upper().replace("-", " ")) == stored
    assert backup_code_matches(code, stored)
    assert backup_code_matches(code.upper(), stored)
    assert backup_code_matches(code.replace("-", ""), stored)


def test_wrong_backup_code_refused() -> None:
    first, second = new_backup_codes()[:2]
    stored = hash_backup_code(first)
    assert not backup_code_matches(second, stored)
    assert not backup_code_matches("not a code", stored)
    assert not backup_code_matches("", stored)
    assert not backup_code_matches(stored, stored)  # the hash itself is not the code


def test_hash_backup_code_rejects_malformed() -> None:
    with pytest.raises(ValueError, match="malformed"):
        hash_backup_code("nope")

"""RateLimiter over in-process memory: limits, retry times, independence, bad settings; and
over a Redis that cannot be reached: the rules that guard secrets refuse, the others let through."""

from __future__ import annotations

import logging
import socket
import sys

import pytest

from blocks.infra.rate_limits import (
    FAIL_CLOSED_RULES,
    RULES,
    RateLimiter,
    RateLimitUnavailable,
    setting_name,
)
from blocks.infra.settings import Settings


def _limiter(**rules: str) -> RateLimiter:
    return RateLimiter(Settings(**{f"rate_limit_{rule}": value for rule, value in rules.items()}))


@pytest.mark.parametrize("rule", ["signin_ip", "api_credential"])  # moving and fixed window
async def test_allows_the_limit_then_refuses_with_a_retry_time(rule: str) -> None:
    limiter = _limiter(**{rule: "3/minute"})
    assert [await limiter.hit(rule, "ip:198.51.100.1") for _ in range(3)] == [None] * 3
    retry = await limiter.hit(rule, "ip:198.51.100.1")
    assert retry is not None
    assert 1 <= retry <= 60
    assert retry == int(retry)
    # Still refused: a refused hit does not free anything.
    assert await limiter.hit(rule, "ip:198.51.100.1") is not None


async def test_identifiers_and_rules_count_separately() -> None:
    limiter = _limiter(signin_ip="1/minute", token_ip="1/minute")
    assert await limiter.hit("signin_ip", "ip:198.51.100.1") is None
    assert await limiter.hit("signin_ip", "ip:198.51.100.1") is not None
    assert await limiter.hit("signin_ip", "ip:198.51.100.2") is None
    assert await limiter.hit("token_ip", "ip:198.51.100.1") is None


async def test_several_limits_in_one_setting_all_apply() -> None:
    limiter = _limiter(signin_account="5/minute;2/hour")
    assert await limiter.hit("signin_account", "account:a@example.test") is None
    assert await limiter.hit("signin_account", "account:a@example.test") is None
    retry = await limiter.hit("signin_account", "account:a@example.test")
    assert retry is not None
    assert retry > 60  # the hourly limit decides
    assert limiter.period("signin_account") == 3600


def test_defaults_parse_and_every_rule_has_a_setting() -> None:
    RateLimiter(Settings())
    for rule in RULES:
        assert f"rate_limit_{rule}" in Settings.model_fields


@pytest.mark.parametrize("value", ["lots", "10 per fortnight", "", "0/minute"])
def test_a_bad_rule_fails_at_construction_naming_its_setting(value: str) -> None:
    with pytest.raises(ValueError, match="BLOCKS_RATE_LIMIT_2FA_ACCOUNT"):
        _limiter(**{"2fa_account": value})
    assert setting_name("2fa_account") == "BLOCKS_RATE_LIMIT_2FA_ACCOUNT"


async def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown rate-limit rule"):
        await _limiter().hit("signup_moon", "ip:198.51.100.1")


def test_unknown_storage_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="BLOCKS_RATE_LIMIT_STORAGE_URL"):
        _limiter(storage_url="memcached://localhost:11211")
    with pytest.raises(ValueError, match="BLOCKS_RATE_LIMIT_STORAGE_URL"):
        _limiter(storage_url="localhost:6379")


def test_redis_without_the_library_fails_clearly_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if the redis extra were not installed (the test extra installs it).
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(RuntimeError, match=r"blocks\[redis\]") as raised:
        _limiter(storage_url="redis://user:hunter2@localhost:6379/0")
    assert "hunter2" not in str(raised.value)


def test_refusals_are_audited_once_per_period() -> None:
    limiter = _limiter(signin_ip="1/minute")
    assert limiter.first_refusal("signin_ip", "ip:198.51.100.1")
    assert not limiter.first_refusal("signin_ip", "ip:198.51.100.1")
    assert limiter.first_refusal("signin_ip", "ip:198.51.100.2")
    assert limiter.first_refusal("token_ip", "ip:198.51.100.1")


async def test_case_does_not_make_a_new_identifier() -> None:
    limiter = _limiter(signin_account="1/minute")
    assert await limiter.hit("signin_account", "account:a@example.test") is None
    assert await limiter.hit("signin_account", "account:A@Example.TEST") is not None


async def test_asking_whether_a_limit_is_used_up_counts_nothing() -> None:
    limiter = _limiter(signin_account="2/minute")
    for _ in range(5):
        assert await limiter.over("signin_account", "account:a@example.com") is None
    await limiter.hit("signin_account", "account:a@example.com")
    assert await limiter.over("signin_account", "account:a@example.com") is None
    await limiter.hit("signin_account", "account:a@example.com")
    wait = await limiter.over("signin_account", "account:a@example.com")
    assert wait is not None
    assert wait >= 1


def _closed_port() -> int:
    # A port nothing listens on: bound and released, so connecting to it is refused at once.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _store_down() -> RateLimiter:
    """A limiter whose shared store (Redis) cannot be reached."""
    return _limiter(storage_url=f"redis://127.0.0.1:{_closed_port()}/0")


@pytest.mark.parametrize("rule", sorted(FAIL_CLOSED_RULES))
async def test_with_the_store_down_the_rules_that_guard_secrets_refuse(rule: str) -> None:
    limiter = _store_down()
    with pytest.raises(RateLimitUnavailable) as raised:
        await limiter.hit(rule, "ip:198.51.100.1")
    assert raised.value.rule == rule
    with pytest.raises(RateLimitUnavailable):
        await limiter.over(rule, "ip:198.51.100.1")


async def test_with_the_store_down_api_traffic_passes_with_one_log_line_per_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = _store_down()
    open_rules = sorted(set(RULES) - FAIL_CLOSED_RULES)
    assert open_rules == ["api_credential", "api_ip", "invalid_ip"]
    with caplog.at_level(logging.WARNING, logger="blocks.rate_limits"):
        for rule in open_rules:
            for _ in range(3):
                assert await limiter.hit(rule, "credential:k1") is None
            assert await limiter.over(rule, "credential:k1") is None
    lines = [r.getMessage() for r in caplog.records if r.name == "blocks.rate_limits"]
    # One line per rule while the store stays down, not one per request.
    assert len(lines) == len(open_rules)
    for rule, line in zip(open_rules, lines, strict=True):
        assert f"rule {rule} not enforced" in line

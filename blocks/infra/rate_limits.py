"""Rate-limit counters (the `limits` library, async API), one rule per `rate_limit_<rule>` setting.

A rule is named after its setting without the prefix: rule "signin_ip" is counted against
`Settings.rate_limit_signin_ip` (BLOCKS_RATE_LIMIT_SIGNIN_IP). Each setting is a `limits` string,
e.g. "30/minute", "10/15 minutes", or several separated by ";" ("10/second;300/hour"), all of
which then apply. The rules:

    signin_ip       sign-in attempts from one client address
    signin_account  sign-in attempts for one account (whatever address they come from)
    token_ip        sign-up, sign-in links, password resets, invite acceptance, from one address
    2fa_account     second-factor attempts for one account
    api_credential  authenticated requests per API key or session
    api_ip          authenticated requests per client address (counted with api_credential)
    invalid_ip      requests refused as invalid (400/422), from one client address
    slack_link_user Slack link codes tried by one Slack user (see api/integrations/slack_links)

Counters live in `rate_limit_storage_url`: "memory://" keeps them in this process (each API
replica counts on its own), "redis://host:6379[/db]" (also rediss://, redis+unix://,
redis+sentinel://, redis+cluster://) shares them between replicas and needs the optional
`redis` dependency (`pip install 'blocks[redis]'`).

When the storage fails (a shared Redis is down), the rules that guard secrets (passwords, codes,
tokens: `FAIL_CLOSED_RULES`) refuse, raising `RateLimitUnavailable` (the API answers 503): without
counters those secrets could be guessed without limit. The throughput rules let the request
through and log a line, so an outage of the store does not take the whole API down with it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from math import ceil
from urllib.parse import urlsplit, urlunsplit

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.aio.strategies import RateLimiter as Strategy
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string

from blocks.infra.settings import Settings

_log = logging.getLogger("blocks.rate_limits")

# Low-volume rules that guard secrets (passwords, codes, tokens) are counted exactly, over a
# moving window: every hit is kept for the window's length, so no burst fits at a window edge.
# The high-volume API rules use fixed windows instead: one counter per key whatever the limit
# (a moving window of 6000/minute would keep 6000 timestamps per address) and an exact
# Retry-After (the window's end), at the price of allowing up to twice the limit across the
# edge of two windows, which is fine for a throughput limit.
MOVING_WINDOW_RULES = (
    "signin_ip",
    "signin_account",
    "token_ip",
    "2fa_account",
    "slack_link_user",
    "invalid_ip",
)
FIXED_WINDOW_RULES = ("api_credential", "api_ip")
RULES = MOVING_WINDOW_RULES + FIXED_WINDOW_RULES
# Rules that refuse when their counters cannot be read: each guards a secret someone could guess.
FAIL_CLOSED_RULES = frozenset(
    {"signin_ip", "signin_account", "token_ip", "2fa_account", "slack_link_user"}
)
# While the storage is down, a rule that fails open logs at most one line per this many seconds.
_OPEN_LOG_INTERVAL_SECONDS = 10.0

_REDIS_SCHEMES = {"redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster"}
# Identifiers whose refusal was audited, kept at most this many (see first_refusal).
_AUDIT_MEMO_MAX = 10_000


class RateLimitUnavailable(Exception):
    """The counters of a fail-closed rule could not be read or written: refuse the request."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"rate-limit storage unavailable for rule {rule}")
        self.rule = rule


def setting_name(rule: str) -> str:
    """The environment variable that sets `rule`."""
    return f"BLOCKS_RATE_LIMIT_{rule.upper()}"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _storage(url: str) -> Storage:
    """The async storage for a `rate_limit_storage_url` ("memory://", "redis://...")."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower().removeprefix("async+")
    if not sep:
        raise ValueError(
            f"BLOCKS_RATE_LIMIT_STORAGE_URL={_redacted(url)!r} is not a URL such as memory:// "
            "or redis://host:6379"
        )
    if scheme == "memory":
        return MemoryStorage()
    if scheme not in _REDIS_SCHEMES:
        raise ValueError(
            f"BLOCKS_RATE_LIMIT_STORAGE_URL: unsupported scheme {scheme!r} "
            f"(use memory:// or one of {', '.join(sorted(s + '://' for s in _REDIS_SCHEMES))})"
        )
    try:
        # redis-py (the `limits[redis]` extra), not coredis, the library's async default.
        storage = storage_from_string(
            f"async+{scheme}://{rest}", implementation="redispy", wrap_exceptions=True
        )
    except ConfigurationError as err:
        raise RuntimeError(
            f"BLOCKS_RATE_LIMIT_STORAGE_URL={_redacted(url)!r} needs the redis library: "
            f"install Blocks with the redis extra (pip install 'blocks[redis]'): {err}"
        ) from err
    assert isinstance(storage, Storage)
    return storage


def _parse_rule(rule: str, value: str) -> list[RateLimitItem]:
    try:
        items = parse_many(value)
    except ValueError:
        raise ValueError(
            f"{setting_name(rule)}={value!r} is not a rate limit such as '30/minute' or "
            "'10/15 minutes'"
        ) from None
    if not items or any(item.amount < 1 for item in items):
        raise ValueError(f"{setting_name(rule)}={value!r} must allow at least one request")
    return items


def _key(identifier: str) -> str:
    # Identifiers may be email addresses: the storage (possibly a shared Redis) sees a digest.
    # Case does not make a new identifier (A@x and a@x are one mailbox, one counter).
    return hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:32]


class RateLimiter:
    """Every rule of the settings, parsed (a bad value fails here, naming its setting), and the
    storage that counts hits. Build one per process (or app) and share it."""

    def __init__(self, settings: Settings) -> None:
        self._items: dict[str, list[RateLimitItem]] = {
            rule: _parse_rule(rule, getattr(settings, f"rate_limit_{rule}")) for rule in RULES
        }
        storage = _storage(settings.rate_limit_storage_url)
        self._moving = MovingWindowRateLimiter(storage)
        self._fixed = FixedWindowRateLimiter(storage)
        self._audited: dict[tuple[str, str], float] = {}
        self._open_logged: dict[str, float] = {}

    def _strategy(self, rule: str) -> Strategy:
        return self._fixed if rule in FIXED_WINDOW_RULES else self._moving

    def _rule_items(self, rule: str) -> list[RateLimitItem]:
        try:
            return self._items[rule]
        except KeyError:
            raise ValueError(f"unknown rate-limit rule {rule!r}") from None

    def period(self, rule: str) -> float:
        """The longest window of `rule`, in seconds."""
        return float(max(item.get_expiry() for item in self._rule_items(rule)))

    async def hit(self, rule: str, identifier: str) -> float | None:
        """Count one hit of `rule` for `identifier`: None if it is allowed, else the seconds
        (at least 1) until a retry may succeed. Refused hits do not push that time back.

        If the storage fails (a shared Redis is down), a rule of `FAIL_CLOSED_RULES` raises
        `RateLimitUnavailable`; any other rule allows the hit and logs the failure, so the API
        stays up, unlimited, rather than refusing everyone."""
        return await self._check(rule, identifier, count=True)

    async def over(self, rule: str, identifier: str) -> float | None:
        """Like `hit`, without counting: None if one more hit would be allowed, else the seconds
        until it would be. For limits that count only failures (wrong passwords)."""
        return await self._check(rule, identifier, count=False)

    async def _check(self, rule: str, identifier: str, *, count: bool) -> float | None:
        items = self._rule_items(rule)
        strategy = self._strategy(rule)
        key = _key(identifier)
        retry: float | None = None
        try:
            for item in items:
                allowed = (
                    await strategy.hit(item, "blocks", rule, key)
                    if count
                    else await strategy.test(item, "blocks", rule, key)
                )
                if allowed:
                    continue
                stats = await strategy.get_window_stats(item, "blocks", rule, key)
                wait = max(1.0, stats.reset_time - time.time())
                retry = wait if retry is None else max(retry, wait)
        except StorageError as err:
            if rule in FAIL_CLOSED_RULES:
                _log.error("rate-limit storage failed; rule %s refuses: %s", rule, err)
                raise RateLimitUnavailable(rule) from err
            self._log_open(rule, err)
            return None
        return None if retry is None else float(ceil(retry))

    def _log_open(self, rule: str, err: StorageError) -> None:
        now = time.monotonic()
        last = self._open_logged.get(rule)
        if last is not None and now - last < _OPEN_LOG_INTERVAL_SECONDS:
            return
        self._open_logged[rule] = now
        _log.warning(
            "rate-limit storage failed; rule %s not enforced (requests allowed) until it is back "
            "(logged at most every %.0f s): %s",
            rule,
            _OPEN_LOG_INTERVAL_SECONDS,
            err,
        )

    def first_refusal(self, rule: str, identifier: str) -> bool:
        """Whether a refusal of `rule` for `identifier` is the first one in this process within
        the rule's period, i.e. whether it should be audited: an attack that keeps hammering a
        limit then writes one audit event per period, not one per refused request. The memo is
        small and in-process (with several replicas, each audits its first refusal)."""
        now = time.monotonic()
        key = (rule, _key(identifier))
        until = self._audited.pop(key, None)
        if until is not None and until > now:
            self._audited[key] = until
            return False
        self._audited[key] = now + self.period(rule)
        if len(self._audited) > _AUDIT_MEMO_MAX:
            self._audited = {k: t for k, t in self._audited.items() if t > now}
            # Still full (many identifiers refused at once): forget the oldest entries.
            while len(self._audited) > _AUDIT_MEMO_MAX:
                del self._audited[next(iter(self._audited))]
        return True

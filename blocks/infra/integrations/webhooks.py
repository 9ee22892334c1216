"""Outbound webhooks, one attempt at a time: Standard Webhooks signing and a single guarded POST.

`signature_header` signs `{msg_id}.{timestamp}.{body}` with every live secret (two during a
rotation) through the `standardwebhooks` package. `deliver` makes one attempt: it POSTs the body
exactly as given through the SSRF guard (`guarded_client`: checked, pinned, no redirects) and
says what happened as a `DeliveryOutcome` (delivered, retry, gone, failed, refused), never
carrying the receiver's answer body. Retrying along `RETRY_SCHEDULE` is the caller's business.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from secrets import token_bytes

import httpx
from standardwebhooks import Webhook

from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    OutboundURLRefused,
    check_outbound_url,
    guarded_client,
    refuse_redirect,
)

__all__ = [
    "RETRY_AFTER_CAP_SECONDS",
    "RETRY_SCHEDULE",
    "TIMEOUT_SECONDS",
    "DeliveryOutcome",
    "OutcomeKind",
    "deliver",
    "new_signing_secret",
    "signature_header",
]

# The spec's example schedule (Svix's): the delay before each attempt, the first one immediate.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
TIMEOUT_SECONDS = 15.0
# A receiver may slow us down but not park a delivery for longer than the schedule's widest gap.
RETRY_AFTER_CAP_SECONDS = int(max(RETRY_SCHEDULE).total_seconds())
_SECRET_BYTES = 32
# The id goes into a header and into the signed `id.timestamp.body`, where a `.` would be ambiguous.
_MSG_ID = re.compile(r"[\x21-\x2d\x2f-\x7e]{1,256}")
_RETRY_STATUSES = frozenset({408, 429})
# The statuses the spec names for throttling, whose Retry-After is honoured (503 is the RFC's own).
_RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_REASON_CHARS = 300


class OutcomeKind(StrEnum):
    """What one attempt came to, and so what the caller does next."""

    DELIVERED = "delivered"  # 2xx: done
    RETRY = "retry"  # 5xx, 408, 429, timeouts, connection errors: try again later
    GONE = "gone"  # 410: the receiver asks for the destination to be disabled
    FAILED = "failed"  # 3xx (never followed) and other 4xx: the receiver refused this
    REFUSED = "refused"  # the SSRF guard refused the address: nothing was sent


@dataclass(frozen=True)
class DeliveryOutcome:
    """One attempt's result, fit for the delivery log: never the receiver's body."""

    kind: OutcomeKind
    status_code: int | None
    latency_ms: int
    retry_after: int | None  # seconds the receiver asked us to wait (Retry-After), capped
    reason: str


def new_signing_secret() -> str:
    """A fresh endpoint secret in the spec's form: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(token_bytes(_SECRET_BYTES)).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, at: datetime, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<base64>` per live secret, space-separated.

    `at` must be timezone-aware; its whole seconds are the `webhook-timestamp` to send with it.
    ValueError for no secrets, a malformed secret, an id with `.` or unprintable characters, a
    naive `at`, or a body that is not UTF-8 (the library signs text; JSON is UTF-8).
    """
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    if not _MSG_ID.fullmatch(msg_id):
        raise ValueError("the message id must be 1-256 printable characters without '.' or space")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the signing time must be timezone-aware")
    # `Webhook.sign` replaces the tzinfo with UTC rather than converting: convert first.
    utc = at.astimezone(UTC)
    text = body.decode("utf-8")  # strict: UTF-8 round-trips, so the signed bytes are the sent ones
    return " ".join(Webhook(secret).sign(msg_id, utc, text) for secret in secrets)


def _short(text: str) -> str:
    return _UNPRINTABLE.sub("?", text)[:_REASON_CHARS]


def _retry_after(value: str | None, now: datetime) -> int | None:
    """Seconds a Retry-After asks for (delay-seconds or an HTTP-date), capped; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = int(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # an HTTP-date is GMT by definition
        seconds = max(0, math.ceil((when - now).total_seconds()))
    return min(seconds, RETRY_AFTER_CAP_SECONDS)


def _classify(response: httpx.Response, latency_ms: int) -> DeliveryOutcome:
    status = response.status_code
    retry_after = (
        _retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        if status in _RETRY_AFTER_STATUSES
        else None
    )

    def outcome(kind: OutcomeKind, reason: str) -> DeliveryOutcome:
        return DeliveryOutcome(kind, status, latency_ms, retry_after, _short(reason))

    phrase = f"HTTP {status} {response.reason_phrase}".rstrip()
    if 200 <= status < 300:
        return outcome(OutcomeKind.DELIVERED, phrase)
    if 300 <= status < 400:
        try:
            refuse_redirect(response)
        except OutboundURLRefused as refused:
            return outcome(OutcomeKind.FAILED, refused.reason)
    if status == 410:
        return outcome(OutcomeKind.GONE, f"{phrase}: the receiver asks to disable the destination")
    if status >= 500 or status in _RETRY_STATUSES:
        return outcome(OutcomeKind.RETRY, phrase)
    return outcome(OutcomeKind.FAILED, phrase)


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: OutboundPolicy,
) -> httpx.Response:
    """POST through the guard and return the answer's status and headers; its body is not read."""
    try:
        request = client.build_request("POST", url, content=body, headers=headers)
    except httpx.InvalidURL:
        # httpx cannot parse it; the guard's own check says what it would lead to (or why it
        # is no URL at all) as the OutboundURLRefused that `send` would have raised.
        await check_outbound_url(url, policy)
        raise
    # Streamed and closed unread: a receiver's answer body is neither wanted nor kept.
    response = await client.send(request, stream=True)
    await response.aclose()
    return response


async def deliver(
    url: str,
    *,
    msg_id: str,
    body: bytes,
    secrets: Sequence[str],
    policy: OutboundPolicy,
    timeout: float = TIMEOUT_SECONDS,  # noqa: ASYNC109 (per attempt, and per phase for httpx)
) -> DeliveryOutcome:
    """One signed POST of `body` (exactly these bytes) to `url`, as a DeliveryOutcome.

    `msg_id` is the same on every attempt of one message (the receiver's idempotency key); the
    timestamp is this attempt's, so each attempt carries a fresh signature. Only a bad argument
    raises (see `signature_header`); every outcome of the network is a DeliveryOutcome.
    """
    at = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature_header(secrets, msg_id, at, body),
        "content-type": "application/json",
    }
    started = time.monotonic()

    def elapsed_ms() -> int:
        return round((time.monotonic() - started) * 1000)

    def no_answer(kind: OutcomeKind, reason: str) -> DeliveryOutcome:
        return DeliveryOutcome(kind, None, elapsed_ms(), None, _short(reason))

    try:
        # httpx's timeout is per phase (connect, each read...); a receiver trickling its status
        # line and headers a byte at a time would never trip it, so the attempt has a deadline.
        async with asyncio.timeout(timeout), guarded_client(policy, timeout=timeout) as client:
            response = await _post(client, url, body, headers, policy)
    except OutboundURLRefused as refused:
        return no_answer(OutcomeKind.REFUSED, refused.reason)
    except (TimeoutError, httpx.TimeoutException):
        return no_answer(OutcomeKind.RETRY, f"no answer within {timeout:g} s")
    except httpx.InvalidURL as error:
        return no_answer(OutcomeKind.FAILED, f"not a valid URL ({error})")
    except httpx.TransportError as error:
        # Connection refused or reset, a name that does not resolve, a broken answer: all may
        # pass. The message names the failure; httpx's carry no body.
        return no_answer(OutcomeKind.RETRY, f"{type(error).__name__}: {error}")
    return _classify(response, elapsed_ms())

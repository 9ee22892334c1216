"""One signed webhook attempt against a real receiver on 127.0.0.1 that verifies with standardwebhooks.

Each outcome kind is shown from a real answer (200, 500, 410, 302, 429, a held request), rotation
carries two signatures that each verify alone, a tampered body does not verify, and URLs the
SSRF guard refuses never reach a receiver.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from blocks.infra.integrations.outbound_addresses import OutboundPolicy
from blocks.infra.integrations.webhooks import (
    RETRY_AFTER_CAP_SECONDS,
    RETRY_SCHEDULE,
    TIMEOUT_SECONDS,
    DeliveryOutcome,
    OutcomeKind,
    deliver,
    new_signing_secret,
    signature_header,
)
from tests.webhook_receiver import Answer, WebhookReceiver, running_receiver, verifies

# Bytes as a caller serialised them: odd spacing and non-ASCII, which must arrive unchanged.
BODY = '{"type":"run.completed",  "data": {"name": "Zoë", "n": 1}}'.encode()


# Started once per module (uvicorn takes ~0.2 s to stop) and reset for each test.
@pytest.fixture(scope="module")
async def served() -> AsyncIterator[WebhookReceiver]:
    async with running_receiver(new_signing_secret()) as running:
        yield running


@pytest.fixture(scope="module")
async def bystander() -> AsyncIterator[WebhookReceiver]:
    """A second receiver on another loopback port, which the first one's policy does not admit."""
    async with running_receiver(new_signing_secret()) as running:
        yield running


@pytest.fixture
def receiver(served: WebhookReceiver) -> WebhookReceiver:
    served.reset()
    return served


async def _send(
    receiver: WebhookReceiver,
    msg_id: str = "msg_1",
    *,
    secrets: Sequence[str] | None = None,
    timeout: float = TIMEOUT_SECONDS,  # noqa: ASYNC109 (handed to deliver)
) -> DeliveryOutcome:
    return await deliver(
        receiver.url,
        msg_id=msg_id,
        body=BODY,
        secrets=receiver.secrets if secrets is None else secrets,
        policy=receiver.policy,
        timeout=timeout,
    )


def test_new_signing_secret_is_the_spec_form() -> None:
    first, second = new_signing_secret(), new_signing_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert first != second


def test_retry_schedule_is_the_spec_one() -> None:
    assert [int(d.total_seconds()) for d in RETRY_SCHEDULE] == [
        0,
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        50400,
        72000,
        86400,
    ]


def test_signature_header_rejects_what_cannot_be_signed_unambiguously() -> None:
    secret = new_signing_secret()
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="secret"):
        signature_header([], "msg_1", now, BODY)
    with pytest.raises(ValueError, match="message id"):
        signature_header([secret], "msg.1", now, BODY)
    with pytest.raises(ValueError, match="timezone"):
        signature_header([secret], "msg_1", now.replace(tzinfo=None), BODY)
    with pytest.raises(ValueError, match="utf-8"):
        signature_header([secret], "msg_1", now, b"\xff")


def test_a_non_utc_time_signs_its_own_instant() -> None:
    # standardwebhooks replaces the tzinfo instead of converting, which would sign 2 h off.
    secret = new_signing_secret()
    utc = datetime.now(UTC).replace(microsecond=0)
    local = utc.astimezone(timezone(timedelta(hours=2)))
    header = signature_header([secret], "msg_1", local, BODY)
    assert header == signature_header([secret], "msg_1", utc, BODY)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(utc.timestamp())),
        "webhook-signature": header,
    }
    assert verifies(secret, headers, BODY)


async def test_a_good_delivery_verifies_and_arrives_byte_for_byte(
    receiver: WebhookReceiver,
) -> None:
    outcome = await _send(receiver, "msg_good")

    assert outcome.kind is OutcomeKind.DELIVERED
    assert outcome.status_code == 200
    assert outcome.retry_after is None
    [got] = receiver.received
    assert got.verified
    assert got.body == BODY
    assert got.headers["webhook-id"] == "msg_good"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-signature"].startswith("v1,")
    assert " " not in got.headers["webhook-signature"]  # one secret, one signature


async def test_a_tampered_body_is_refused_by_the_verifier(receiver: WebhookReceiver) -> None:
    await _send(receiver)
    [got] = receiver.received
    secret = receiver.secrets[0]
    assert verifies(secret, got.headers, got.body)
    assert not verifies(secret, got.headers, got.body.replace(b'"n": 1', b'"n": 2'))

    # In flight: the signature of one body, sent with another.
    at = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "webhook-id": "msg_tampered",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature_header([secret], "msg_tampered", at, BODY),
        "content-type": "application/json",
    }
    async with httpx.AsyncClient(trust_env=False) as plain:
        answer = await plain.post(receiver.url, content=BODY + b" ", headers=headers)
    assert answer.status_code == 401
    assert not receiver.received[-1].verified


async def test_a_secret_the_receiver_does_not_hold_is_a_failure(
    receiver: WebhookReceiver,
) -> None:
    outcome = await _send(receiver, secrets=[new_signing_secret()])

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.status_code == 401
    assert not receiver.received[0].verified


async def test_during_a_rotation_both_signatures_are_sent_and_each_verifies_alone(
    receiver: WebhookReceiver,
) -> None:
    old = receiver.secrets[0]
    new = new_signing_secret()

    outcome = await _send(receiver, secrets=[old, new])

    assert outcome.kind is OutcomeKind.DELIVERED
    [got] = receiver.received
    signatures = got.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert verifies(old, got.headers, got.body)
    assert verifies(new, got.headers, got.body)
    assert not verifies(new_signing_secret(), got.headers, got.body)


async def test_the_same_webhook_id_on_every_attempt(receiver: WebhookReceiver) -> None:
    receiver.answer(500, 200)

    first = await _send(receiver, "msg_again")
    second = await _send(receiver, "msg_again")

    assert (first.kind, first.status_code) == (OutcomeKind.RETRY, 500)
    assert (second.kind, second.status_code) == (OutcomeKind.DELIVERED, 200)
    assert receiver.ids() == ["msg_again", "msg_again"]
    assert all(r.verified for r in receiver.received)


@pytest.mark.parametrize(
    ("answer", "kind", "retry_after"),
    [
        (Answer(500), OutcomeKind.RETRY, None),
        (Answer(408), OutcomeKind.RETRY, None),
        (Answer(410), OutcomeKind.GONE, None),
        (Answer(400), OutcomeKind.FAILED, None),
        (Answer(429, {"retry-after": "7"}), OutcomeKind.RETRY, 7),
        (Answer(503, {"retry-after": "999999999"}), OutcomeKind.RETRY, RETRY_AFTER_CAP_SECONDS),
        (Answer(502, {"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}), OutcomeKind.RETRY, 0),
        (Answer(504, {"retry-after": "soon"}), OutcomeKind.RETRY, None),
        # Retry-After is honoured only where the spec throttles, not on any 5xx.
        (Answer(500, {"retry-after": "7"}), OutcomeKind.RETRY, None),
    ],
    ids=lambda v: str(v.status) if isinstance(v, Answer) else None,
)
async def test_answers_map_to_outcomes(
    receiver: WebhookReceiver, answer: Answer, kind: OutcomeKind, retry_after: int | None
) -> None:
    receiver.answer(answer)

    outcome = await _send(receiver)

    assert outcome.kind is kind
    assert outcome.status_code == answer.status
    assert outcome.retry_after == retry_after
    assert len(receiver.received) == 1


async def test_a_redirect_is_a_failure_and_is_not_followed(receiver: WebhookReceiver) -> None:
    # The Location is the receiver itself, admitted by the policy: only "no redirects" stops it.
    receiver.answer(Answer(302, {"location": receiver.url + "/elsewhere"}), 200)

    outcome = await _send(receiver)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.status_code == 302
    assert "redirect" in outcome.reason
    assert [r.path for r in receiver.received] == ["/hooks"]


async def test_a_receiver_slower_than_the_timeout_is_retried() -> None:
    # A receiver of its own: the held request stays with it, not with the shared one.
    async with running_receiver(new_signing_secret()) as slow:
        slow.answer(Answer(200, hold=True))

        outcome = await _send(slow, timeout=0.5)

        assert outcome.kind is OutcomeKind.RETRY
        assert outcome.status_code is None
        assert "0.5 s" in outcome.reason
        assert len(slow.received) == 1  # it arrived; its answer never did


async def test_nothing_listening_is_retried() -> None:
    async with running_receiver(new_signing_secret()) as gone:
        url, secrets, policy = gone.url, gone.secrets, gone.policy
    outcome = await deliver(url, msg_id="msg_1", body=BODY, secrets=secrets, policy=policy)

    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.status_code is None


NO_PRIVATE = OutboundPolicy()


@pytest.mark.parametrize(
    ("url", "admitting"),
    [
        # The receiver's own policy, but a loopback port it does not admit.
        ("http://127.0.0.1:{other}/hooks", True),
        # The receiver's port, spelled as an IPv4-mapped IPv6 address.
        ("http://[::ffff:127.0.0.1]:{port}/hooks", True),
        # Production's policy (nothing private): every spelling of the receiver is refused.
        ("http://0177.1:{port}/hooks", False),
        ("https://0177.1:{port}/hooks", False),
        ("https://[::ffff:127.0.0.1]:{port}/hooks", False),
        ("http://localhost:{port}/hooks", False),
        ("https://localhost:{port}/hooks", False),
        ("https://127.0.0.1:{port}/hooks", False),
    ],
)
async def test_refused_addresses_are_never_reached(
    receiver: WebhookReceiver, bystander: WebhookReceiver, url: str, admitting: bool
) -> None:
    bystander.reset()
    target = url.format(port=receiver.port, other=bystander.port)

    outcome = await deliver(
        target,
        msg_id="msg_1",
        body=BODY,
        secrets=receiver.secrets,
        policy=receiver.policy if admitting else NO_PRIVATE,
    )

    assert outcome.kind is OutcomeKind.REFUSED, outcome
    assert outcome.status_code is None
    assert receiver.received == []
    assert bystander.received == []

"""What the event stream and delivery workflows are asked and answer: plain data the API, the
worker's dispatcher, the workflows and their activities share."""

from __future__ import annotations

from dataclasses import dataclass

EVENT_STREAM_WORKFLOW = "blocks.event_stream"
WEBHOOK_DELIVERY_WORKFLOW = "blocks.webhook_delivery"


def stream_workflow_id(destination_id: str) -> str:
    """One stream per destination: starting it again while it runs is a no-op."""
    return f"blocks-event-stream-{destination_id}"


@dataclass(frozen=True)
class StreamRequest:
    org_id: str
    destination_id: str


@dataclass(frozen=True)
class StreamStep:
    more: bool  # there is more to send now: the workflow takes another pass at once


@dataclass(frozen=True)
class DeliveryRequest:
    org_id: str
    delivery_id: str


@dataclass(frozen=True)
class AttemptRequest:
    org_id: str
    delivery_id: str
    index: int  # which attempt of RETRY_SCHEDULE this is (0: the first)


@dataclass(frozen=True)
class AttemptResult:
    status: str  # the delivery's status after this attempt
    next_delay_seconds: float | None  # wait this long, then attempt again; None: done

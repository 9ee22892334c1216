"""System workflows that carry events out of Blocks: one stream per destination, one delivery
per webhook message.

`EventStreamWorkflow` (id `blocks-event-stream-<destination>`) takes passes of
`advance_stream` until nothing is left to send, then ends; the worker's dispatcher starts it
again when its organization has news. A pass that fails (a SIEM down) is retried by Temporal
with backoff for as long as it takes, so the stream resumes where the receiver stopped taking it.

`WebhookDeliveryWorkflow` (id `blocks-webhook-delivery-<delivery>-<redelivery>`) makes the
attempts of one message along the Standard Webhooks schedule (immediately, 5 s, 5 min, 30 min,
2 h, 5 h, 10 h, 14 h, 20 h, 24 h), a `Retry-After` lengthening a wait; the timers are durable,
so a worker restart neither loses nor repeats an attempt's place in the schedule.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from blocks.core.integrations.streams import (
    EVENT_STREAM_WORKFLOW,
    WEBHOOK_DELIVERY_WORKFLOW,
    AttemptRequest,
    DeliveryRequest,
    StreamRequest,
)

with workflow.unsafe.imports_passed_through():
    from blocks.activities.webhooks import EventStreamActivities

_PASSES_PER_RUN = 100  # then continue as new: a stream's history stays small
# A receiver down: try again after 5 s, doubling up to every 5 minutes, for as long as it takes
# (the destination is disabled after days of failures, which ends the stream).
_STREAM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
# An attempt's own activity is retried only when Blocks failed to make it (PostgreSQL away):
# what the receiver answered is the activity's result, not an error.
_ATTEMPT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


@workflow.defn(name=EVENT_STREAM_WORKFLOW)
class EventStreamWorkflow:
    @workflow.run
    async def run(self, request: StreamRequest) -> None:
        for _ in range(_PASSES_PER_RUN):
            step = await workflow.execute_activity_method(
                EventStreamActivities.advance_stream,
                request,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=_STREAM_RETRY,
            )
            if not step.more:
                return
        workflow.continue_as_new(request)


@workflow.defn(name=WEBHOOK_DELIVERY_WORKFLOW)
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, request: DeliveryRequest) -> str:
        """Returns the delivery's final status (delivered, failed, gone, skipped)."""
        index = 0
        while True:
            result = await workflow.execute_activity_method(
                EventStreamActivities.attempt_delivery,
                AttemptRequest(request.org_id, request.delivery_id, index),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=_ATTEMPT_RETRY,
            )
            if result.next_delay_seconds is None:
                return result.status
            await workflow.sleep(timedelta(seconds=result.next_delay_seconds))
            index += 1

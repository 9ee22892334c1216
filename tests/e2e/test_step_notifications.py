"""Approvers are told when a step opens, at each reminder and at escalation, through every channel."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.core.approvals.notifications import NoticeKind, StepNotice
from blocks.infra.embedded.postgres import PostgresCredentials
from tests.e2e.test_approval_chains import _start
from tests.support import make_org, running_stack, wait_for_status


class RecordingSender:
    """A channel that keeps what it was asked to deliver; fails its first delivery once."""

    name = "recording"

    def __init__(self) -> None:
        self.notices: list[StepNotice] = []
        self._failed_once = False

    async def send(self, notice: StepNotice) -> None:
        if not self._failed_once:
            self._failed_once = True
            raise ConnectionError("the channel is briefly unreachable")  # Temporal retries it
        self.notices.append(notice)


async def test_open_reminders_and_escalation_are_notified(
    engine: AsyncEngine, time_skipping_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    sender = RecordingSender()
    async with (
        running_stack(
            engine=engine,
            temporal=time_skipping_env.client,
            database_url=postgres.url(),
            task_queue=f"notify-{uuid.uuid4().hex[:8]}",
            notice_senders=[sender],
        ) as stack,
        stack.http() as http,
    ):
        run_id = await _start(http, org)
        await time_skipping_env.sleep(timedelta(hours=21))
        await time_skipping_env.sleep(timedelta(hours=4))
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")

    kinds = [(n.kind, n.step_id) for n in sender.notices]
    assert kinds == [
        (NoticeKind.OPENED, "review"),
        (NoticeKind.REMINDER, "review"),
        (NoticeKind.REMINDER, "review"),
        (NoticeKind.ESCALATED, "review"),
    ]
    opened, *_, escalated = sender.notices
    assert opened.run_id == run_id
    assert opened.workflow_name == "purchase_approval"
    assert f"user:{org['owner'].user_id}" not in opened.approvers
    assert f"user:{org['owner'].user_id}" in escalated.approvers  # the director joined
    assert len({n.notice_id for n in sender.notices}) == 4

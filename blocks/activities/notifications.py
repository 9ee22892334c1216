"""Notification activity: tells a step's approvers through every configured channel."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from temporalio import activity

from blocks.core.approvals.notifications import StepNotice

_log = logging.getLogger("blocks.notifications")


class NoticeSender(Protocol):
    """A channel (Slack, email, ...). Raise to have Temporal retry the delivery."""

    name: str

    async def send(self, notice: StepNotice) -> None: ...


class NotificationActivities:
    def __init__(self, senders: Sequence[NoticeSender] = ()) -> None:
        self._senders = list(senders)

    @activity.defn(name="blocks.notify.step")
    async def notify_step(self, notice: StepNotice) -> list[str]:
        """Returns the channels that delivered. With no channel configured this does nothing."""
        delivered: list[str] = []
        for sender in self._senders:
            await sender.send(notice)
            delivered.append(sender.name)
        if not delivered:
            _log.debug("no notification channel configured for %s", notice.notice_id)
        return delivered

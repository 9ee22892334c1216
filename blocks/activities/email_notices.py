"""The email channel: each approver of a step gets a personal, single-use decision link."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.approvals.notifications import NoticeKind, StepNotice
from blocks.core.approvals.policy import GROUP_PREFIX
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.integrations.email import Mailer
from blocks.models.approvals.decision_links import issue_link
from blocks.models.approvals.groups import members_of_groups
from blocks.models.approvals.runs import get_run
from blocks.models.identity.orgs import members_matching

_SUBJECTS = {
    NoticeKind.OPENED: "Approval needed: {title}",
    NoticeKind.REMINDER: "Reminder — approval needed: {title}",
    NoticeKind.ESCALATED: "Escalated — approval needed: {title}",
}


class EmailNoticeSender:
    name = "email"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        mailer: Mailer,
        *,
        public_url: str,
        link_ttl: timedelta,
    ) -> None:
        self._sessions = sessions
        self._mailer = mailer
        self._public_url = public_url.rstrip("/")
        self._link_ttl = link_ttl

    async def send(self, notice: StepNotice) -> None:
        ctx = OrgContext(
            org_id=OrgId(uuid.UUID(notice.org_id)), user_id=None, roles=(), auth=AuthMethod.SYSTEM
        )
        user_ids = [uuid.UUID(x[5:]) for x in notice.approvers if x.startswith("user:")]
        roles = [x[5:] for x in notice.approvers if x.startswith("role:")]
        groups = [x[len(GROUP_PREFIX) :] for x in notice.approvers if x.startswith(GROUP_PREFIX)]
        async with self._sessions() as session:
            run = await get_run(ctx, session, uuid.UUID(notice.run_id))
            requester = run.requested_by if run else None
            user_ids += await members_of_groups(ctx, session, groups)
            people = [
                (p.id, p.email)
                for p in await members_matching(ctx, session, user_ids=user_ids, roles=roles)
            ]
        for person_id, email in people:
            if person_id == requester:
                continue  # the requester cannot approve their own run; no link for them
            # One transaction per person: the link exists only if its email went out, so a
            # retried delivery resends exactly the emails that failed.
            async with self._sessions() as session, session.begin():
                token = await issue_link(
                    ctx,
                    session,
                    run_id=uuid.UUID(notice.run_id),
                    step_id=notice.step_id,
                    user_id=person_id,
                    notice_id=notice.notice_id,
                    ttl=self._link_ttl,
                )
                if token is None:
                    continue  # delivered by an earlier attempt
                await self._mailer.send(
                    to=email,
                    subject=_SUBJECTS[notice.kind].format(title=notice.title),
                    text=self._body(notice, token),
                )

    def _body(self, notice: StepNotice, token: str) -> str:
        deadline = notice.deadline.isoformat() if notice.deadline else "none"
        return (
            f"{notice.title}\n\n"
            f"Workflow: {notice.workflow_name}\nStep: {notice.step_id}\nDeadline: {deadline}\n\n"
            f"Review and decide (this link is yours alone, works once and expires):\n"
            f"{self._public_url}/v1/decision-links/{token}\n"
        )

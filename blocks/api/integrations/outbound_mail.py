"""Email sent on behalf of a request (sign-up, sign-in links, resets, invites), after the response.

Sending after the response keeps SMTP latency out of it, so a request about an address with an
account and one without take the same time.
"""

from __future__ import annotations

import logging

from fastapi import BackgroundTasks, Request

from blocks.api.errors import Problem
from blocks.infra.integrations.email import Mailer
from blocks.infra.settings import Settings

_log = logging.getLogger("blocks.mail")


def require_mail(request: Request) -> Mailer:
    """The mailer, or 503 before anything is changed if this deployment sends no email."""
    settings: Settings = request.app.state.settings
    if settings.smtp_host is None:
        raise Problem(
            503,
            "Email Not Configured",
            "this deployment sends no email (BLOCKS_SMTP_HOST is unset)",
            code="email_not_configured",
        )
    return Mailer(settings)


def public_link(request: Request, path: str) -> str:
    settings: Settings = request.app.state.settings
    return f"{settings.public_url.rstrip('/')}{path}"


def queue_email(
    background: BackgroundTasks, mailer: Mailer, *, to: str, subject: str, text: str
) -> None:
    async def send() -> None:
        try:
            await mailer.send(to=to, subject=subject, text=text)
        except Exception:
            # The body holds a token: log who and what failed, never the message.
            _log.exception("could not send %r to %s", subject, to)

    background.add_task(send)

"""Sending email through SMTP (aiosmtplib); tests receive it on a local aiosmtpd server."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from blocks.infra.settings import Settings


class Mailer:
    def __init__(self, settings: Settings) -> None:
        if settings.smtp_host is None:
            raise ValueError("BLOCKS_SMTP_HOST is not set")
        self._settings = settings

    async def send(self, *, to: str, subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"] = self._settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        password = self._settings.smtp_password
        await aiosmtplib.send(
            message,
            hostname=self._settings.smtp_host,
            port=self._settings.smtp_port,
            username=self._settings.smtp_username,
            password=password.get_secret_value() if password else None,
            start_tls=self._settings.smtp_starttls,
            timeout=20,
        )

"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for tests of email."""

from __future__ import annotations

import asyncio
import re
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller

from tests.support import free_port


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, email: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == email]

    async def wait_for(self, email: str, *, count: int = 1, within: float = 10) -> list[str]:
        """The text bodies of the first `count` messages to `email`, waiting for them to arrive."""
        for _ in range(int(within / 0.05)):
            found = self.to(email)
            if len(found) >= count:
                return [m.get_payload(decode=True).decode() for m in found]  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no email reached {email}")

    async def token_for(self, email: str, pattern: str, *, count: int = 1) -> str:
        """The `pattern` (a regex with one group) found in the latest of `count` messages."""
        bodies = await self.wait_for(email, count=count)
        match = re.search(pattern, bodies[count - 1])
        assert match, f"no {pattern} in {bodies[count - 1]!r}"
        return match.group(1)


class SmtpServer:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    @property
    def settings(self) -> dict[str, object]:
        """The Settings fields that point Blocks' email at this server."""
        return {"smtp_host": "127.0.0.1", "smtp_port": self.port, "smtp_starttls": False}

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

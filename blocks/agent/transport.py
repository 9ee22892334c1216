"""How an agent talks to Blocks: one interface, whatever carries the messages (relay, PubNub).

A transport carries protocol messages (blocks.core.agents.protocol) over one connection. The
runner owns everything above it: reconnecting with backoff (after fetching the session afresh,
which also renews a PubNub token), dropping duplicate tasks, heartbeats, re-sending results.

A transport is built as `SomeTransport(session, token)` from the AgentSession and the agent
token, then:
- `await connect()`: open the connection. Raise AccessRefused when the server refuses the token
  (the runner stops), ConnectionLost for anything a retry may fix.
- `await send(message)`: send one message; ConnectionLost if it could not be sent (the runner keeps
  results and re-sends them on the next connection).
- `messages()`: an async iterator of the messages Blocks sends, decoded; it ends, or raises
  ConnectionLost, when the connection is gone. Malformed messages are skipped (`decode_incoming`).
- `await close()`: release everything; safe to call twice and after a failed connect.

The PubNub transport is `blocks.agent.pubnub_transport.PubNubTransport`, loaded only when a
session names it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from blocks.core.agents.protocol import Message, ProtocolError, decode

log = logging.getLogger("blocks.agent")


class Transport(Protocol):
    async def connect(self) -> None: ...

    async def send(self, message: Message) -> None: ...

    def messages(self) -> AsyncIterator[Message]: ...

    async def close(self) -> None: ...


def decode_incoming(raw: str | bytes | dict[str, object]) -> Message | None:
    """A message Blocks sent, or None (logged, never its content) if it breaks the protocol."""
    try:
        return decode(raw)  # type: ignore[arg-type]
    except ProtocolError as err:
        log.warning("ignored a malformed message from Blocks: %s", err)
        return None

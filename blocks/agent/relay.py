"""The built-in relay transport: one outbound WebSocket to the Blocks API, text frames of JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

from websockets.asyncio import client as ws_client
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from blocks import __version__
from blocks.agent.errors import AccessRefused, ConnectionLost, SessionError
from blocks.agent.session import AgentSession, auth_headers
from blocks.agent.transport import decode_incoming
from blocks.core.agents.protocol import MAX_CONTENT_BYTES, Message, encode

# A frame carries at most one message: the largest content plus its envelope.
MAX_FRAME = MAX_CONTENT_BYTES + 128 * 1024
OPEN_TIMEOUT = 15.0


class RelayTransport:
    """`Transport` over the relay's WebSocket (`session.relay_url`), the token as a bearer header
    (a dev agent's name as X-Blocks-Dev-Agent)."""

    def __init__(self, session: AgentSession, token: str) -> None:
        if session.relay_url is None:
            raise SessionError("relay_url: required when the transport is the relay")
        self._url = session.relay_url
        self._token = token
        self._socket: ws_client.ClientConnection | None = None

    async def connect(self) -> None:
        try:
            self._socket = await ws_client.connect(
                self._url,
                additional_headers=auth_headers(self._token),
                user_agent_header=f"blocks-agent/{__version__}",
                open_timeout=OPEN_TIMEOUT,
                max_size=MAX_FRAME,
                # Keepalive pings find a dead network (a NAT that forgot us) within ~40 s.
                ping_interval=20,
                ping_timeout=20,
            )
        except InvalidStatus as err:
            status = err.response.status_code
            if status in (401, 403):
                raise AccessRefused(
                    f"the relay refused the agent token ({status}): it is revoked, rotated or "
                    "out of scope"
                ) from None
            raise ConnectionLost(f"the relay answered {status}") from None
        except InvalidURI:
            raise SessionError(f"relay_url: not a WebSocket URL: {self._url}") from None
        except (OSError, TimeoutError, InvalidHandshake) as err:
            raise ConnectionLost(f"cannot connect to the relay: {_reason(err)}") from None

    async def send(self, message: Message) -> None:
        if self._socket is None:
            raise ConnectionLost("not connected")
        try:
            await self._socket.send(encode(message))
        except ConnectionClosed as err:
            raise ConnectionLost(f"the relay connection closed: {_reason(err)}") from None

    async def messages(self) -> AsyncIterator[Message]:
        if self._socket is None:
            raise ConnectionLost("not connected")
        try:
            async for raw in self._socket:
                message = decode_incoming(raw)
                if message is not None:
                    yield message
        except ConnectionClosed as err:
            raise ConnectionLost(f"the relay connection closed: {_reason(err)}") from None
        raise ConnectionLost("the relay closed the connection")

    async def close(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.close()


def _reason(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__

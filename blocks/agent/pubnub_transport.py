"""The PubNub transport, the agent's side: tasks from its tasks channel, its messages to its results
channel, through the `pubnub` SDK with the session's Access Manager token and payload key.

The session's `pubnub` block names the keys, a token Blocks granted with its secret key (read the
tasks channel, write the results channel, for `ttl_minutes`, bound to one PubNub uuid, which this
reads from the token itself), the two channels and the AES-256 key the SDK's crypto module seals
every payload with (PubNub carries only ciphertext). The token is fetched afresh from the session
before it ends (`RENEW_AT` of its life) without interrupting the subscription. Subscribing keeps
the agent present on its tasks channel (PubNub presence: Blocks shows it online) and a leave is
sent on close. Any error PubNub reports (a refused token, a lost connection) ends the connection
with ConnectionLost: the runner reconnects after fetching the session again, which renews the
token (or stops, if Blocks refuses the agent token). A result too large for PubNub's 32 KiB is
sent as a failure that says so rather than retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pubnub.callbacks import SubscribeCallback
from pubnub.crypto import AesCbcCryptoModule
from pubnub.endpoints.presence.leave import Leave
from pubnub.enums import PNReconnectionPolicy, PNStatusCategory
from pubnub.exceptions import PubNubAsyncioException
from pubnub.managers import TokenManager
from pubnub.models.consumer.common import PNStatus
from pubnub.models.consumer.pubsub import PNMessageResult
from pubnub.pnconfiguration import PNConfiguration
from pubnub.pubnub_asyncio import PubNubAsyncio

from blocks.agent.errors import AccessRefused, ConnectionLost, SessionError
from blocks.agent.session import AgentSession, fetch_session
from blocks.agent.transport import decode_incoming
from blocks.core.agents.protocol import FAILED, Message, ResultMessage, encode

log = logging.getLogger("blocks.agent")

CONNECT_TIMEOUT = 20.0
RENEW_AT = 0.75  # of the token's life: fetch a new one then
PRESENCE_TIMEOUT = 60  # seconds without a heartbeat before PubNub reports the agent gone
MAX_MESSAGE_BYTES = 32 * 1024
_ENVELOPE_MARGIN = 512
_REQUIRED = ("subscribe_key", "publish_key", "auth_token", "tasks_channel", "results_channel")
_IGNORED = frozenset({PNStatusCategory.PNDecryptionErrorCategory})


class _Listener(SubscribeCallback):  # type: ignore[misc]
    """The SDK's callbacks, turned into a queue of messages (or the error that ends them)."""

    def __init__(self, inbox: asyncio.Queue[Message | ConnectionLost]) -> None:
        self._inbox = inbox
        self.connected = asyncio.Event()

    def status(self, pubnub: PubNubAsyncio, status: PNStatus) -> None:
        if status.category == PNStatusCategory.PNConnectedCategory:
            self.connected.set()
        elif status.category in _IGNORED:
            log.warning("a PubNub message could not be decrypted (not sealed with our key)")
        elif status.is_error() or status.category in (
            PNStatusCategory.PNDisconnectedCategory,
            PNStatusCategory.PNUnexpectedDisconnectCategory,
            PNStatusCategory.PNConnectionErrorCategory,
        ):
            code = getattr(status, "status_code", None)
            self._inbox.put_nowait(ConnectionLost(f"PubNub: {status.category.name} ({code})"))

    def message(self, pubnub: PubNubAsyncio, message: PNMessageResult) -> None:
        decoded = decode_incoming(message.message)
        if decoded is not None:
            self._inbox.put_nowait(decoded)

    def presence(self, pubnub: PubNubAsyncio, presence: object) -> None:
        pass


class PubNubTransport:
    """`Transport` over PubNub, as the session's `pubnub` block describes it."""

    def __init__(self, session: AgentSession, token: str) -> None:
        block = session.pubnub
        if not isinstance(block, dict):
            raise SessionError("pubnub: required when the transport is PubNub")
        for name in _REQUIRED:
            if not isinstance(block.get(name), str) or not block[name]:
                raise SessionError(f"pubnub.{name}: required text")
        self._session = session
        self._block: dict[str, Any] = block
        self._token = token
        self._pubnub: PubNubAsyncio | None = None
        self._inbox: asyncio.Queue[Message | ConnectionLost] = asyncio.Queue()
        self._renewer: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    def _config(self) -> PNConfiguration:
        block = self._block
        config = PNConfiguration()
        config.subscribe_key = block["subscribe_key"]
        config.publish_key = block["publish_key"]
        # The uuid the token is bound to (PubNub refuses the token under any other).
        parsed = TokenManager.parse_token(block["auth_token"])
        config.user_id = parsed.get("authorized_uuid") or f"blocks-agent.{self._session.agent_id}"
        if block.get("origin"):
            config.origin = block["origin"]
        config.ssl = block.get("ssl") is not False
        if block.get("cipher_key"):
            config.cipher_key = block["cipher_key"]
            config.crypto_module = AesCbcCryptoModule(config)
        # Errors end the connection: the runner reconnects with a fresh session (and token).
        config.reconnect_policy = PNReconnectionPolicy.NONE
        config.enable_presence_heartbeat = True
        config.suppress_leave_events = True  # close() sends the leave itself, before stopping
        config.set_presence_timeout(PRESENCE_TIMEOUT)
        return config

    async def connect(self) -> None:
        try:
            config = self._config()
        except Exception as err:  # a token the SDK cannot read: the session is unusable
            raise SessionError(f"pubnub.auth_token: not an Access Manager token ({err})") from None
        self._pubnub = PubNubAsyncio(config)
        self._pubnub.set_token(self._block["auth_token"])
        listener = _Listener(self._inbox)
        self._pubnub.add_listener(listener)
        self._pubnub.subscribe().channels([self._block["tasks_channel"]]).execute()
        connected = asyncio.create_task(listener.connected.wait())
        failed = asyncio.create_task(self._inbox.get())
        done, _ = await asyncio.wait(
            {connected, failed}, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in (connected, failed):
            waiter.cancel()
        if failed in done:
            item = failed.result()
            if isinstance(item, ConnectionLost):
                raise item
            self._inbox.put_nowait(item)  # a message that came first: keep it
        elif connected not in done:
            raise ConnectionLost("PubNub: no subscription within the time allowed")
        ttl = self._block.get("ttl_minutes")
        if isinstance(ttl, int | float) and ttl > 0:
            self._renewer = asyncio.create_task(self._renew_forever(float(ttl) * 60))

    async def _renew_forever(self, life: float) -> None:
        """Fetch a fresh token from the session before this one ends; a refusal ends the
        connection (the runner then learns from the session whether the agent may go on)."""
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(20.0))
        while True:
            await asyncio.sleep(max(life * RENEW_AT, 5.0))
            try:
                session = await fetch_session(self._http, self._session.api_url, self._token)
            except (ConnectionLost, AccessRefused, SessionError) as err:
                self._inbox.put_nowait(ConnectionLost(f"PubNub token not renewed: {err}"))
                return
            block = session.pubnub or {}
            if block.get("cipher_key") != self._block.get("cipher_key") or not block.get(
                "auth_token"
            ):
                self._inbox.put_nowait(ConnectionLost("PubNub session changed: reconnecting"))
                return
            self._block = {**self._block, "auth_token": block["auth_token"]}
            if self._pubnub is not None:
                self._pubnub.set_token(block["auth_token"])
            log.info("PubNub token renewed")

    async def send(self, message: Message) -> None:
        if self._pubnub is None:
            raise ConnectionLost("not connected")
        message = self._within_cap(message)
        body = json.loads(encode(message))
        envelope = (
            await self._pubnub.publish()
            .channel(self._block["results_channel"])
            .message(body)
            .use_post(True)
            .future()
        )
        if isinstance(envelope, PubNubAsyncioException) or envelope.status.is_error():
            code = getattr(envelope.status, "status_code", None)
            raise ConnectionLost(f"PubNub publish failed ({code})")

    def _within_cap(self, message: Message) -> Message:
        """The message, or for a result too large for PubNub, a failure that says so."""
        text = encode(message)
        crypto = self._pubnub.config.crypto_module if self._pubnub is not None else None
        wire = crypto.encrypt(text) if crypto is not None else text
        size = len(json.dumps(wire)) + len(self._block["results_channel"]) + _ENVELOPE_MARGIN
        if size <= MAX_MESSAGE_BYTES or not isinstance(message, ResultMessage):
            return message
        error = f"the result ({size} bytes sealed) is over PubNub's {MAX_MESSAGE_BYTES} byte cap"
        log.warning("task %s: %s", message.task_id, error)
        return ResultMessage(message.task_id, FAILED, error=error)

    async def messages(self) -> AsyncIterator[Message]:
        if self._pubnub is None:
            raise ConnectionLost("not connected")
        while True:
            item = await self._inbox.get()
            if isinstance(item, ConnectionLost):
                raise item
            yield item

    async def close(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewer
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        pubnub, self._pubnub = self._pubnub, None
        if pubnub is not None:
            # Leave first, so Blocks sees the agent go at once (not after the presence timeout).
            with contextlib.suppress(Exception):
                await Leave(pubnub).channels([self._block["tasks_channel"]]).future()
            await pubnub.stop()

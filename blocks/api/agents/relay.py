"""The built-in relay: agents connect out to the API over a WebSocket and receive their tasks on it.

`GET /v1/agents/connect` (WebSocket, `Authorization: Bearer blkagent_...`, or in dev mode
`X-Blocks-Dev-Agent`: api.agents.auth): an agent behind NAT opens it and needs no inbound port. Tasks wait in PostgreSQL (models.agents.tasks) until the agent
acknowledges them, so an API restart loses none; a dispatch wakes the relay through
`LISTEN blocks_agent_tasks`, and every connection also looks again every few seconds, which
sends unacknowledged deliveries again (at least once; the agent drops duplicates by task id).
The token is checked again on every message, so a revoked token is cut off at its next one.
Messages are `blocks.core.agents.protocol` text frames; what they do is models.agents.completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from blocks.api.agents.auth import (
    AgentCredential,
    AgentRefusal,
    agent_credential,
    check_agent_credential,
    record_agent_denial,
)
from blocks.core.agents import protocol as p
from blocks.models.agents.completion import AgentLink, TaskNotTaken, handle_message
from blocks.models.agents.registry import mark_seen
from blocks.models.agents.tasks import ACK_SECONDS, claim_deliveries, listen_for_tasks
from blocks.models.agents.tokens import AgentPrincipal

router = APIRouter(tags=["agents"])
_log = logging.getLogger("blocks.relay")
# How often a connection looks for due deliveries without being woken (redelivery, and a wake-up
# lost while the listener reconnected).
_POLL_SECONDS = ACK_SECONDS / 2
# How often an open connection's token is looked up again (a revocation closes it at once).
_RECHECK_SECONDS = 30.0
# Messages of one connection handled at once (each task's in order).
_CONCURRENT_MESSAGES = 16
_POLICY_VIOLATION = 1008
_INTERNAL = 1011


@dataclass
class _TaskGate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(eq=False)  # each connection is itself (kept in sets)
class _Connection:
    principal: AgentPrincipal
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cancels: list[str] = field(default_factory=list)
    # Set by a revocation's NOTIFY: the connection closes at once, whatever it is doing.
    revoked: bool = False
    checked_at: float = field(default_factory=time.monotonic)
    # One gate per task in flight: a task's messages are handled in order, tasks side by side.
    task_gates: dict[str, _TaskGate] = field(default_factory=dict)


class RelayHub:
    """The agents connected to this API process, and the database listener that wakes them."""

    def __init__(self) -> None:
        self._connections: dict[uuid.UUID, set[_Connection]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None

    def online(self) -> frozenset[uuid.UUID]:
        """Agents with an open connection to this process."""
        return frozenset(agent for agent, conns in self._connections.items() if conns)

    def add(self, principal: AgentPrincipal) -> _Connection:
        connection = _Connection(principal)
        self._connections[principal.agent_id].add(connection)
        return connection

    def remove(self, connection: _Connection) -> None:
        self._connections[connection.principal.agent_id].discard(connection)

    def notified(self, payload: str) -> None:
        """`<agent id>` (new work), `<agent id>:cancel:<task id>`, or `<agent id>:revoked:<token
        id>` (`*`: every token of the agent)."""
        agent, _, rest = payload.partition(":")
        try:
            agent_id = uuid.UUID(agent)
        except ValueError:
            return
        for connection in self._connections.get(agent_id, ()):
            if rest.startswith("cancel:"):
                connection.cancels.append(rest.removeprefix("cancel:"))
            elif rest.startswith("revoked:"):
                token = rest.removeprefix("revoked:")
                if token in ("*", str(connection.principal.token_id)):
                    connection.revoked = True
            connection.wake.set()

    def start(self, database_url: str) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(database_url))

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def _listen(self, database_url: str) -> None:
        await listen_for_tasks(database_url, self.notified, self._wake_all, who="relay listener")

    def _wake_all(self) -> None:
        """After (re)connecting the listener: notices sent meanwhile were lost, look again."""
        for conns in self._connections.values():
            for conn in conns:
                conn.wake.set()


async def _resolve(
    websocket: WebSocket, credential: AgentCredential | None, *, seen: bool = False
) -> AgentPrincipal | None:
    """The token's principal (a dev agent's: resolved again by name each time); a refusal is
    audited (`agent.access_denied`) and answers None."""
    if credential is None:
        return None
    sessions: async_sessionmaker[AsyncSession] = websocket.app.state.sessions
    async with sessions() as session, session.begin():
        checked = await check_agent_credential(websocket, session, credential, loud=seen)
        if isinstance(checked, AgentPrincipal) and seen:
            await mark_seen(checked.context(), session, checked.agent_id)
    if isinstance(checked, AgentRefusal):
        await record_agent_denial(websocket, checked)
        return None
    return checked


@router.websocket("/v1/agents/connect")
async def connect(websocket: WebSocket) -> None:
    """An agent's connection: its tasks out, its acknowledgements, heartbeats and results in."""
    state = websocket.app.state
    sessions: async_sessionmaker[AsyncSession] = state.sessions
    client: Client = state.temporal
    hub: RelayHub = state.relay
    credential = agent_credential(websocket)
    principal = await _resolve(websocket, credential, seen=True)
    if principal is None:
        # Refused at the handshake (403): the agent SDK stops instead of retrying.
        await websocket.close(code=_POLICY_VIOLATION, reason="invalid or revoked agent token")
        return
    await websocket.accept()
    connection = hub.add(principal)
    link = AgentLink(principal=principal, sessions=sessions, client=client)
    sender = asyncio.create_task(_send_deliveries(websocket, link, connection, credential))
    try:
        await _receive(websocket, link, connection, credential)
    except WebSocketDisconnect:
        pass
    finally:
        hub.remove(connection)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _still_valid(
    websocket: WebSocket, connection: _Connection, credential: AgentCredential | None
) -> bool:
    """Whether the connection's token still works: a revocation's NOTIFY says so at once; the
    database is asked again every `_RECHECK_SECONDS` (expiry, a notice lost in an outage)."""
    if not connection.revoked and time.monotonic() - connection.checked_at < _RECHECK_SECONDS:
        return True
    # Asked again (and a refusal audited) when a revocation is announced or the check is old.
    if await _resolve(websocket, credential) is None:
        connection.revoked = True
        return False
    connection.revoked = False
    connection.checked_at = time.monotonic()
    return True


async def _receive(
    websocket: WebSocket,
    link: AgentLink,
    connection: _Connection,
    credential: AgentCredential | None,
) -> None:
    handling: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(_CONCURRENT_MESSAGES)
    closing = asyncio.Event()
    try:
        while not closing.is_set():
            raw = await websocket.receive_text()
            if not await _still_valid(websocket, connection, credential):
                await websocket.close(code=_POLICY_VIOLATION, reason="agent token revoked")
                return
            try:
                message = p.decode(raw)
            except p.ProtocolError as err:
                # Dropped (the reason names a field, never content); the agent sends it again.
                _log.warning("agent %s sent a malformed message: %s", link.principal.agent_id, err)
                continue
            await slots.acquire()
            job = asyncio.create_task(_handle(websocket, link, connection, message, closing))
            handling.add(job)
            job.add_done_callback(lambda done: (handling.discard(done), slots.release()))
    finally:
        for job in handling:
            job.cancel()


async def _handle(
    websocket: WebSocket,
    link: AgentLink,
    connection: _Connection,
    message: p.Message,
    closing: asyncio.Event,
) -> None:
    """One message, after the earlier ones about the same task (an ack before its result)."""
    gate = connection.task_gates.setdefault(message.task_id, _TaskGate())
    gate.users += 1
    try:
        async with gate.lock:
            try:
                replies = await handle_message(link, message)
            except TaskNotTaken:
                # Temporal cannot take the result now: the agent re-sends it after reconnecting.
                closing.set()
                await websocket.close(code=_INTERNAL, reason="result not taken; send it again")
                return
            for reply in replies:
                await websocket.send_text(p.encode(reply))
    except (WebSocketDisconnect, RuntimeError):
        return  # the connection went away meanwhile: the agent re-sends
    finally:
        gate.users -= 1
        if gate.users == 0:
            connection.task_gates.pop(message.task_id, None)


async def _send_deliveries(
    websocket: WebSocket,
    link: AgentLink,
    connection: _Connection,
    credential: AgentCredential | None,
) -> None:
    principal = link.principal
    while True:
        connection.wake.clear()
        # Checked again before anything goes out: a token revoked while its connection stays
        # open and silent receives nothing more.
        if not await _still_valid(websocket, connection, credential):
            await websocket.close(code=_POLICY_VIOLATION, reason="agent token revoked")
            return
        while connection.cancels:
            task_id = connection.cancels.pop()
            await websocket.send_text(p.encode(p.CancelMessage(task_id=task_id, reason="canceled")))
        async with link.sessions() as session, session.begin():
            deliveries = await claim_deliveries(
                principal.context(), session, agent_id=principal.agent_id, skills=principal.skills
            )
        for delivery in deliveries:
            await websocket.send_text(p.encode(delivery.message()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.wake.wait(), timeout=_POLL_SECONDS)

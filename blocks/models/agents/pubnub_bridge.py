"""The PubNub transport, Blocks' side: tasks out on each agent's tasks channel, results in from its
results channel, presence for online status, and the Access Manager grant of an agent's session.

One PubNubAsyncio client per process, holding the secret key. Deliveries are the relay's: a
dispatch's `NOTIFY blocks_agent_tasks` wakes the bridge, `claim_deliveries` hands it what is due
(SKIP LOCKED: two processes never send one delivery twice), and anything not acknowledged after
ACK_SECONDS is claimed and published again: PubNub's live delivery is at most once, so this is
what makes it at least once (the agent drops duplicates by task id). A task whose sealed message
would pass PubNub's 32 KiB cap goes by reference: `input_ref` names `GET
/v1/agents/tasks/{id}/input`, which answers only the task's own agent's token, only until the
agent acknowledges it. Results are read with one long poll over the results channels of every
PubNub agent (the list is refreshed, and a poll in flight is replaced, cursor kept, when it
changes), opened with the agent's payload key, checked against the agent token their publisher
uuid names, and handed to the same `handle_message` as the relay's; the replies (acks, cancels)
go back on the tasks channel. A result lost on the way is recovered by Temporal's heartbeat
timeout: the retry delivers the task again and the agent re-sends its stored result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from typing import Any

from pubnub.crypto import PubNubCryptoModule
from pubnub.endpoints.pubsub.subscribe import Subscribe
from pubnub.exceptions import PubNubAsyncioException
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from blocks.core.agents import protocol as p
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.infra.agents.pubnub_grants import (
    PRESENCE_SUFFIX,
    RESULTS,
    TASKS,
    TOKEN_TTL_MINUTES,
    PubNubKeys,
    PubNubUnavailable,
    crypto_for,
    fits,
    grant_agent,
    open_sealed,
    parse_channel,
    presence_channel,
    publish,
    results_channel,
    seal,
    server_client,
    tasks_channel,
    token_of_uuid,
)
from blocks.models.agents.completion import AgentLink, TaskNotTaken, handle_message
from blocks.models.agents.pubnub_agents import (
    PubNubAgent,
    all_pubnub_agents,
    principal_of_token,
    pubnub_agent,
    system_context,
)
from blocks.models.agents.tasks import ACK_SECONDS, claim_deliveries, listen_for_tasks
from blocks.models.agents.tokens import AgentPrincipal
from blocks.models.audit.events import append_events

_log = logging.getLogger("blocks.agents.pubnub")
_POLL_SECONDS = ACK_SECONDS / 2  # how often due deliveries are looked for without a wake-up
REFRESH_SECONDS = 30.0  # how often the list of PubNub agents (and who is present) is re-read
_RETRY_SECONDS = 2.0
INPUT_PATH = "/v1/agents/tasks/{task_id}/input"


class PubNubBridge:
    """Blocks' end of the PubNub transport in one process; `app.state.agent_pubnub`."""

    def __init__(
        self,
        keys: PubNubKeys,
        sessions: async_sessionmaker[AsyncSession],
        client: Client,
        *,
        ttl_minutes: int = TOKEN_TTL_MINUTES,
    ) -> None:
        self._keys = keys
        self._sessions = sessions
        self._client = client
        self._ttl = ttl_minutes
        self._pubnub = server_client(keys)
        self._agents: dict[uuid.UUID, PubNubAgent] = {}
        self._crypto: dict[uuid.UUID, PubNubCryptoModule] = {}
        self._present: dict[uuid.UUID, set[str]] = {}
        self._channels_changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._cancels: list[tuple[uuid.UUID, str]] = []
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._loops: list[asyncio.Task[None]] = []

    # --- The session hook and the agents served ---------------------------------------------

    async def grant(self, principal: AgentPrincipal) -> dict[str, Any]:
        """The `pubnub` block of the agent's session: keys, a fresh token, channels, payload key."""
        async with self._sessions() as session, session.begin():
            agent = await pubnub_agent(principal.context(), session, principal.agent_id)
        if agent is None:
            raise PubNubUnavailable("the agent is not a PubNub agent")
        self._track(agent)
        token = await grant_agent(self._pubnub, agent.agent_id, principal.token_id, self._ttl)
        return {
            "subscribe_key": self._keys.subscribe_key,
            "publish_key": self._keys.publish_key,
            "auth_token": token,
            "ttl_minutes": self._ttl,
            "tasks_channel": tasks_channel(agent.agent_id),
            "results_channel": results_channel(agent.agent_id),
            "cipher_key": agent.cipher,
            "origin": self._keys.origin,
            "ssl": self._keys.ssl,
        }

    def online(self) -> frozenset[uuid.UUID]:
        """PubNub agents present on their tasks channel (PubNub's presence)."""
        return frozenset(agent for agent, uuids in self._present.items() if uuids)

    def _track(self, agent: PubNubAgent) -> None:
        known = self._agents.get(agent.agent_id)
        self._agents[agent.agent_id] = agent
        if known is None or known.cipher != agent.cipher:
            self._crypto[agent.agent_id] = crypto_for(agent.cipher)
        if known is None:
            self._channels_changed.set()
            self._wake.set()

    def _channels(self) -> list[str]:
        listed: list[str] = []
        for agent_id in sorted(self._agents):
            listed += [results_channel(agent_id), presence_channel(tasks_channel(agent_id))]
        return listed

    # --- Running ------------------------------------------------------------------------------

    def start(self, database_url: str) -> None:
        if not self._loops:
            self._loops = [
                asyncio.create_task(self._listen(database_url)),
                asyncio.create_task(self._refresh()),
                asyncio.create_task(self._deliver_forever()),
                asyncio.create_task(self._subscribe_forever()),
                asyncio.create_task(self._handle_forever()),
            ]

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop
        self._loops = []
        await self._pubnub.stop()

    async def _listen(self, database_url: str) -> None:
        """LISTEN for dispatches and cancellations (polling covers an outage meanwhile)."""
        await listen_for_tasks(database_url, self._notified, self._wake.set, who="PubNub bridge")

    def _notified(self, payload: str) -> None:
        agent, _, rest = payload.partition(":")
        try:
            agent_id = uuid.UUID(agent)
        except ValueError:
            return
        if agent_id not in self._agents:
            return  # a relay agent's
        if rest.startswith("cancel:"):
            self._cancels.append((agent_id, rest.removeprefix("cancel:")))
        self._wake.set()

    async def _refresh(self) -> None:
        """Re-read the PubNub agents (new, deleted, moved to the relay) and who is present."""
        while True:
            try:
                agents = {a.agent_id: a for a in await all_pubnub_agents(self._sessions)}
                for gone in set(self._agents) - set(agents):
                    self._agents.pop(gone, None)
                    self._present.pop(gone, None)
                    self._channels_changed.set()
                for agent in agents.values():
                    self._track(agent)
                await self._seed_presence(list(agents))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or PubNub away: the next round tries again
                _log.warning("PubNub agents not refreshed: %s", type(exc).__name__)
            await asyncio.sleep(REFRESH_SECONDS)

    async def _seed_presence(self, agent_ids: list[uuid.UUID]) -> None:
        """Who is on each tasks channel now (joins before this process started were missed)."""
        if not agent_ids:
            return
        channels = [tasks_channel(a) for a in agent_ids]
        envelope = await self._pubnub.here_now().channels(channels).include_uuids(True).future()
        if isinstance(envelope, PubNubAsyncioException) or envelope.status.is_error():
            return
        here = {c.channel_name: c for c in envelope.result.channels}
        for agent_id in agent_ids:
            data = here.get(tasks_channel(agent_id))
            occupants = (data.occupants or []) if data is not None else []
            self._present[agent_id] = {o.uuid for o in occupants if token_of_uuid(o.uuid)}

    # --- Tasks out ----------------------------------------------------------------------------

    async def _deliver_forever(self) -> None:
        while True:
            self._wake.clear()
            cancels, self._cancels = self._cancels, []
            for agent_id, task_id in cancels:
                cancel = p.CancelMessage(task_id=task_id, reason="canceled")
                await self._send(agent_id, cancel)
            for agent in list(self._agents.values()):
                try:
                    await self._deliver(agent)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one agent's trouble does not stop the others
                    _log.warning("deliveries to agent %s failed: %s", agent.agent_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=_POLL_SECONDS)

    async def _deliver(self, agent: PubNubAgent) -> None:
        async with self._sessions() as session, session.begin():
            deliveries = await claim_deliveries(
                system_context(agent.org_id), session, agent_id=agent.agent_id, skills=agent.skills
            )
        for delivery in deliveries:
            await self._send(agent.agent_id, delivery.message())

    async def _send(self, agent_id: uuid.UUID, message: p.Message) -> None:
        """Seal and publish one message on the agent's tasks channel; a task too large for
        PubNub goes by reference. A failure is logged: the delivery is claimed again later."""
        crypto = self._crypto.get(agent_id)
        if crypto is None:
            return
        channel = tasks_channel(agent_id)
        sealed = seal(crypto, p.encode(message))
        if not fits(channel, sealed):
            if not isinstance(message, p.TaskMessage):
                _log.warning("a %s message too large for PubNub was not sent", message.type)
                return
            ref = INPUT_PATH.format(task_id=message.task_id)
            sealed = seal(crypto, p.encode(dataclasses.replace(message, input=None, input_ref=ref)))
        try:
            await publish(self._pubnub, channel, sealed)
        except PubNubUnavailable as err:
            _log.warning("PubNub publish to agent %s failed: %s", agent_id, err)

    # --- Results in ---------------------------------------------------------------------------

    async def _subscribe_forever(self) -> None:
        """One long poll over every results (and tasks presence) channel; the cursor is kept
        across channel changes, so nothing published meanwhile is skipped."""
        cursor = 0
        while True:
            channels = self._channels()
            self._channels_changed.clear()
            if not channels:
                await self._channels_changed.wait()
                continue
            poll = asyncio.create_task(
                Subscribe(self._pubnub).channels(channels).timetoken(cursor).future()
            )
            changed = asyncio.create_task(self._channels_changed.wait())
            done, _ = await asyncio.wait({poll, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if poll not in done:
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await poll
                continue
            envelope = poll.result()
            if isinstance(envelope, PubNubAsyncioException) or envelope.status.is_error():
                _log.warning("PubNub subscribe failed; retrying")
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            cursor = int(envelope.result["t"]["t"])
            for raw in envelope.result.get("m", []):
                self._inbox.put_nowait(raw)

    async def _handle_forever(self) -> None:
        """Messages in arrival order, one at a time (an ack before the result it precedes)."""
        while True:
            raw = await self._inbox.get()
            try:
                await self._received(raw)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad message does not stop the others
                _log.warning("a PubNub message was not handled: %s", type(exc).__name__)

    async def _received(self, raw: dict[str, Any]) -> None:
        parsed = parse_channel(str(raw.get("c", "")))
        if parsed is None or parsed[0] not in self._agents:
            return
        agent = self._agents[parsed[0]]
        if parsed[1] == TASKS + PRESENCE_SUFFIX:
            self._presence(agent.agent_id, raw.get("d"))
        elif parsed[1] == RESULTS:
            await self._result(agent, raw.get("d"), raw.get("i"))

    def _presence(self, agent_id: uuid.UUID, event: object) -> None:
        if not isinstance(event, dict) or token_of_uuid(event.get("uuid")) is None:
            return
        present = self._present.setdefault(agent_id, set())
        if event.get("action") == "join":
            present.add(str(event["uuid"]))
        elif event.get("action") in ("leave", "timeout"):
            present.discard(str(event["uuid"]))

    async def _result(self, agent: PubNubAgent, payload: object, publisher: object) -> None:
        opened = open_sealed(self._crypto[agent.agent_id], payload)
        if opened is None:
            _log.warning("agent %s: a message not sealed with its key, ignored", agent.agent_id)
            return
        try:
            message = p.decode(opened)
        except p.ProtocolError as err:
            _log.warning("agent %s sent a malformed message: %s", agent.agent_id, err)
            return
        token_id = token_of_uuid(publisher if isinstance(publisher, str) else None)
        principal = None
        if token_id is not None:
            async with self._sessions() as session, session.begin():
                ctx = system_context(agent.org_id)
                principal = await principal_of_token(ctx, session, agent.agent_id, token_id)
        if principal is None:
            await self._refused(agent, token_id, message)
            return
        link = AgentLink(principal=principal, sessions=self._sessions, client=self._client)
        try:
            replies = await handle_message(link, message)
        except TaskNotTaken:
            # Temporal is unreachable: the attempt times out and the retry asks the agent again.
            _log.warning("agent %s: a %s not taken now", agent.agent_id, message.type)
            return
        for reply in replies:
            await self._send(agent.agent_id, reply)

    async def _refused(
        self, agent: PubNubAgent, token_id: uuid.UUID | None, message: p.Message
    ) -> None:
        """A message under a revoked, expired or unknown agent token: dropped, and audited."""
        record = AuditRecord(
            action="agent.access_denied",
            actor_type=ActorType.AGENT,
            actor_id=str(agent.agent_id),
            target_type="agent_task",
            target_id=message.task_id[:100],
            outcome=Outcome.DENIED,
            reason=f"a {message.type} over PubNub under an agent token that is not live",
            data={"agent": agent.name, "token_id": str(token_id) if token_id else None},
        )
        async with self._sessions() as session, session.begin():
            await append_events(system_context(agent.org_id), session, [record])

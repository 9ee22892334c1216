"""What the local PubNub-protocol server holds: messages in timetoken order, and who is present.

Messages are kept for the life of the server (a long poll resumes after its cursor from them);
presence events are ordinary messages on `<channel>-pnpres`, stored with a timetoken of their
own, so a subscriber sees them after its cursor like any message.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

PRESENCE = "-pnpres"


@dataclass
class Stored:
    timetoken: int
    channel: str
    payload: Any
    publisher: str | None
    meta: Any = None


class State:
    """Everything the server holds; one event loop, so no locks beyond the condition."""

    def __init__(self) -> None:
        self.messages: list[Stored] = []
        self.last_tt = 0
        self.arrived = asyncio.Condition()
        self.drop_next: Counter[str] = Counter()
        self.here: dict[str, dict[str, float]] = {}  # channel -> uuid -> deadline (monotonic)
        self.clock_offset = 0.0
        self.stats: Counter[str] = Counter()
        self.denials: list[dict[str, Any]] = []

    def now(self) -> float:
        return time.time() + self.clock_offset

    def next_tt(self) -> int:
        self.last_tt = max(int(time.time() * 10_000_000), self.last_tt + 1)
        return self.last_tt

    async def store(self, channel: str, payload: Any, publisher: str | None, meta: Any) -> int:
        async with self.arrived:
            tt = self.next_tt()
            self.messages.append(Stored(tt, channel, payload, publisher, meta))
            self.arrived.notify_all()
        return tt

    def after(self, cursor: int, channels: set[str]) -> list[Stored]:
        found = [m for m in self.messages if m.timetoken > cursor and m.channel in channels]
        return found[:100]

    async def join(self, channel: str, uuid: str, seconds: float) -> None:
        occupants = self.here.setdefault(channel, {})
        new = uuid not in occupants
        occupants[uuid] = time.monotonic() + seconds
        if new:
            await self.presence_event(channel, "join", uuid)

    async def part(self, channel: str, uuid: str, action: str) -> None:
        if self.here.get(channel, {}).pop(uuid, None) is not None:
            await self.presence_event(channel, action, uuid)

    async def presence_event(self, channel: str, action: str, uuid: str) -> None:
        occupancy = len(self.here.get(channel, {}))
        event = {
            "action": action,
            "uuid": uuid,
            "timestamp": int(self.now()),
            "occupancy": occupancy,
        }
        await self.store(channel + PRESENCE, event, None, None)

    async def sweep(self) -> None:
        """Times out clients whose heartbeat stopped, as PubNub does after the presence timeout."""
        while True:
            await asyncio.sleep(0.5)
            moment = time.monotonic()
            for channel, occupants in list(self.here.items()):
                for uuid, deadline in list(occupants.items()):
                    if deadline < moment:
                        await self.part(channel, uuid, "timeout")

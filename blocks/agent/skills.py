"""`Agent`: the skills an agent serves, each a handler, and `run` to serve them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TypeVar

import httpx

from blocks.agent.backoff import Backoff
from blocks.agent.connect import TransportFactory, open_transport
from blocks.agent.runner import Runner, Sleep
from blocks.agent.session import dev_agent_credential
from blocks.agent.task import Handler

H = TypeVar("H", bound=Handler)
MAX_SKILL_ID = 200  # as the protocol allows


class Agent:
    """An agent: `@agent.skill("id")` on an async function of a Task answering a dict (a plain
    function runs in a thread), then `await agent.run(url=..., token=...)` or `blocks agent run`.

    `max_concurrent_tasks` bounds how many handlers run at once (a small machine's friend); tasks
    beyond it are acknowledged and wait their turn."""

    def __init__(self, *, max_concurrent_tasks: int | None = None) -> None:
        if max_concurrent_tasks is not None and max_concurrent_tasks < 1:
            raise ValueError("max_concurrent_tasks: at least 1")
        self.max_concurrent_tasks = max_concurrent_tasks
        self._handlers: dict[str, Handler] = {}

    def skill(self, skill_id: str) -> Callable[[H], H]:
        """Register the decorated function as the handler of the skill `skill_id` (the id the
        agent card declares)."""
        if not isinstance(skill_id, str) or not skill_id.strip():
            raise ValueError("skill: a non-empty skill id")
        if len(skill_id) > MAX_SKILL_ID:
            raise ValueError(f"skill: longer than {MAX_SKILL_ID} characters")
        if skill_id in self._handlers:
            raise ValueError(f"skill: {skill_id!r} already has a handler")

        def register(handler: H) -> H:
            if not callable(handler):
                raise TypeError(f"skill {skill_id!r}: the handler is not callable")
            self._handlers[skill_id] = handler
            return handler

        return register

    @property
    def skills(self) -> Mapping[str, Handler]:
        return dict(self._handlers)

    async def run(
        self,
        *,
        url: str,
        token: str = "",
        dev_agent: str | None = None,
        http: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        transport_factory: TransportFactory = open_transport,
    ) -> None:
        """Serve tasks until cancelled. Raises AccessRefused when Blocks refuses the token and
        SessionError when `url` is not a Blocks API; every other failure is retried. `http`,
        `backoff`, `sleep` and `transport_factory` are for embedding and tests.

        `dev_agent` instead of a token: connect as the demo organization's agent of that name,
        without authentication, to a Blocks in dev mode on this machine that allows it
        (BLOCKS_AGENT_DEV_NO_AUTH); the runner logs a warning on each connection."""
        if not self._handlers:
            raise ValueError("this agent has no skills: decorate a handler with @agent.skill(id)")
        if token and dev_agent is not None:
            raise ValueError("dev_agent: give a token or a dev agent's name, not both")
        if not token and dev_agent is None:
            raise ValueError("token: the agent token is required")
        runner = Runner(
            self._handlers,
            url=url,
            token=token or dev_agent_credential(dev_agent or ""),
            http=http,
            transport_factory=transport_factory,
            backoff=backoff,
            sleep=sleep,
            max_concurrent_tasks=self.max_concurrent_tasks,
        )
        await runner.run()

"""A task as a skill's handler sees it: its input, progress, questions to a person, cancellation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from blocks.core.agents.protocol import MAX_CONTENT_BYTES, MAX_TEXT, content_size

# What an agent's skill is: an async function of a Task answering a JSON object (a plain
# function is also accepted and runs in a worker thread).
Handler = (
    Callable[["Task"], Awaitable[dict[str, Any] | None]] | Callable[["Task"], dict[str, Any] | None]
)


class TaskFailed(Exception):
    """Raise in a handler to fail the task with this reason, which Blocks records as the error.

    Any other exception fails the task too, with the exception's type and message."""


class _Channel(Protocol):
    """What a Task needs of the runner that delivered it."""

    def progress(self, task_id: str, message: str) -> None: ...

    async def ask(self, task_id: str, question: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class Task:
    """One task from Blocks. `input` is the JSON object the workflow passed (fetched first when it
    was too large to travel inline); `attempt` counts deliveries to a handler (a retry after the
    agent or the network was lost is the same task id with a higher attempt)."""

    id: str
    skill: str
    input: dict[str, Any]
    attempt: int = 1
    run_id: str | None = None
    step: str | None = None
    _channel: _Channel | None = field(default=None, repr=False, compare=False)
    _cancelled: bool = field(default=False, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """Whether Blocks cancelled the task (an async handler also gets CancelledError; a plain
        function running in a thread can poll this)."""
        return self._cancelled

    async def progress(self, message: str) -> None:
        """Report progress: a heartbeat with a message, shown on the run's step (best effort)."""
        if self._channel is not None:
            self._channel.progress(self.id, str(message)[:MAX_TEXT])

    async def ask(self, title: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        """Ask a person: Blocks turns the question into an approval step and this returns its
        answer (the decision as a JSON object), however long that takes."""
        if not isinstance(title, str) or not title.strip():
            raise ValueError("title: a question needs a non-empty title")
        if len(title) > MAX_TEXT:
            raise ValueError(f"title: longer than {MAX_TEXT} characters")
        question: dict[str, Any] = {"title": title}
        if details is not None:
            if not isinstance(details, dict):
                raise ValueError("details: a JSON object")
            try:
                size = content_size(details)
            except (TypeError, ValueError) as err:
                raise ValueError(f"details: not JSON ({err})") from None
            if size > MAX_CONTENT_BYTES:
                raise ValueError(f"details: larger than {MAX_CONTENT_BYTES} bytes as JSON")
            question["details"] = details
        if self._channel is None:
            raise RuntimeError("this task was not delivered by a runner: nobody to ask")
        return await self._channel.ask(self.id, question)

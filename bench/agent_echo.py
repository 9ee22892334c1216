"""The agent the relay benchmark serves, in a process of its own through the agent SDK:
`blocks agent run --url URL --token T bench.agent_echo:agent`. Its one skill adds up numbers."""

from __future__ import annotations

from typing import Any

from blocks.agent import Agent, Task, TaskFailed

SKILL = "echo-sum"

agent = Agent()  # no bound on handlers at once: the bench sets how many tasks are in flight


def total(numbers: object) -> int:
    """The sum of a list of integers (the work both sides do)."""
    if not isinstance(numbers, list) or not all(isinstance(n, int) for n in numbers):
        raise TaskFailed("numbers: a list of integers")
    return sum(numbers)


@agent.skill(SKILL)
async def echo_sum(task: Task) -> dict[str, Any]:
    return {"total": total(task.input.get("numbers"))}

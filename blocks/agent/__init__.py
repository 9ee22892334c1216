"""The agent SDK: serve skills to Blocks from any machine over an outbound-only connection.

    from blocks.agent import Agent, Task, TaskFailed

    agent = Agent()

    @agent.skill("extract-totals")
    async def extract_totals(task: Task) -> dict:
        ...

Then `blocks agent run --url URL --token TOKEN module:agent`. It imports nothing of Blocks but
`blocks.core`, so it runs on a small machine with only this package and its libraries.
"""

from blocks.agent.backoff import Backoff
from blocks.agent.errors import AccessRefused, AgentError, ConnectionLost, SessionError
from blocks.agent.session import AgentSession
from blocks.agent.skills import Agent
from blocks.agent.task import Handler, Task, TaskFailed
from blocks.agent.transport import Transport

__all__ = [
    "AccessRefused",
    "Agent",
    "AgentError",
    "AgentSession",
    "Backoff",
    "ConnectionLost",
    "Handler",
    "SessionError",
    "Task",
    "TaskFailed",
    "Transport",
]

"""Calling a skill's handler, and turning what it answers into a result for Blocks."""

from __future__ import annotations

import asyncio
import inspect
import json

from blocks.agent.task import Handler, Task
from blocks.core.agents.protocol import COMPLETED, FAILED, MAX_CONTENT_BYTES, ResultMessage

MAX_ERROR = 1000  # characters of an error sent to Blocks


async def invoke(handler: Handler, task: Task) -> object:
    if is_async(handler):
        return await handler(task)  # type: ignore[misc]
    return await asyncio.to_thread(handler, task)


def is_async(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 (an object with an async __call__)
    )


def completed(task_id: str, output: object) -> ResultMessage:
    """The handler's answer as a result: a JSON object within the protocol's size."""
    if output is None:
        output = {}
    if not isinstance(output, dict):
        error = f"the handler answered {type(output).__name__}, not a JSON object (dict)"
        return ResultMessage(task_id, FAILED, error=error)
    try:
        size = len(json.dumps(output, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError) as err:
        return ResultMessage(
            task_id, FAILED, error=clip(f"the handler's answer is not JSON: {err}")
        )
    if size > MAX_CONTENT_BYTES:
        error = f"the handler's answer is {size} bytes as JSON, over the {MAX_CONTENT_BYTES} limit"
        return ResultMessage(task_id, FAILED, error=error)
    return ResultMessage(task_id, COMPLETED, output=output)


def clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"

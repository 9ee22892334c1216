"""The agent's runner: open a session, connect, keep reconnecting; run each task once, answer it.

Delivery from Blocks is at least once, so the runner acknowledges every task at once, runs a
task id only once (a duplicate of a finished task gets its stored result again; of a running
task, another ack), heartbeats every running task, and keeps each result until Blocks
acknowledges it, sending it again after a reconnection (Blocks ignores a second copy).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from blocks import __version__
from blocks.agent.backoff import Backoff
from blocks.agent.connect import TransportFactory, open_transport
from blocks.agent.errors import ConnectionLost, InputNotReady
from blocks.agent.handlers import clip, completed, invoke
from blocks.agent.session import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEV_MODE_WARNING,
    AgentSession,
    fetch_input,
    fetch_session,
)
from blocks.agent.task import Handler, Task, TaskFailed
from blocks.agent.transport import Transport
from blocks.core.agents.protocol import (
    CANCELED,
    FAILED,
    INPUT_REQUIRED,
    REJECTED,
    AckMessage,
    CancelMessage,
    InputMessage,
    Message,
    ResultMessage,
    StatusMessage,
    TaskMessage,
)

log = logging.getLogger("blocks.agent")

FINISHED_CAPACITY = 1000  # finished task ids remembered, with their results, for duplicates
# Seconds a result Blocks has not acknowledged is sent again after each reconnection (past that,
# Blocks delivers the task again and gets the stored result).
UNCONFIRMED_SECONDS = 600.0
STABLE_SECONDS = 30.0  # a connection that lasted this long starts the backoff afresh

Sleep = Callable[[float], Awaitable[None]]


@dataclass(eq=False)
class _Job:
    task: Task
    handle: asyncio.Task[None] | None = None
    acked: bool = False
    cancel_requested: bool = False
    question: dict[str, Any] | None = None
    question_taken: bool = False  # Blocks acknowledged the question
    answer: asyncio.Future[dict[str, Any]] | None = None


class Runner:
    """Serves `handlers` (skill id -> handler) for the agent whose token this is, until cancelled
    or until Blocks refuses the token (AccessRefused) or the session is unusable (SessionError)."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        url: str,
        token: str,
        http: httpx.AsyncClient | None = None,
        transport_factory: TransportFactory = open_transport,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        max_concurrent_tasks: int | None = None,
        finished_capacity: int = FINISHED_CAPACITY,
    ) -> None:
        self._handlers = dict(handlers)
        self._url = url.rstrip("/")
        self._token = token
        self._http = http
        self._open = transport_factory
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._limit = asyncio.Semaphore(max_concurrent_tasks) if max_concurrent_tasks else None
        self._capacity = finished_capacity
        self._heartbeat = DEFAULT_HEARTBEAT_SECONDS
        self._session: AgentSession | None = None
        self._connected = False
        self._heard = False  # a message arrived on the current connection
        self._outbox: deque[Message] = deque()
        self._wake = asyncio.Event()
        self._jobs: dict[str, _Job] = {}
        # task id -> (the attempt that produced it, its result)
        self._finished: OrderedDict[str, tuple[int, ResultMessage]] = OrderedDict()
        # Results sent but not yet acknowledged by Blocks: task id -> (when first sent, result)
        self._unconfirmed: OrderedDict[str, tuple[float, ResultMessage]] = OrderedDict()

    async def run(self) -> None:
        http = self._http or httpx.AsyncClient(
            timeout=httpx.Timeout(20.0), headers={"User-Agent": f"blocks-agent/{__version__}"}
        )
        try:
            await self._connect_forever(http)
        finally:
            handles = [job.handle for job in self._jobs.values() if job.handle is not None]
            for handle in handles:
                handle.cancel()
            await asyncio.gather(*handles, return_exceptions=True)
            if self._http is None:
                await http.aclose()

    async def _connect_forever(self, http: httpx.AsyncClient) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            transport: Transport | None = None
            try:
                session = await fetch_session(http, self._url, self._token)
                self._adopt(session)
                transport = self._open(session, self._token)
                await transport.connect()
            except ConnectionLost as err:
                if transport is not None:
                    await _close_quietly(transport)
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.warning("cannot connect: %s; retrying in %.1f s", err, delay)
                await self._sleep(delay)
                continue
            except BaseException:
                if transport is not None:
                    await _close_quietly(transport)
                raise
            log.info(
                "connected to %s as agent %r (%s)", self._url, session.agent, session.transport
            )
            started = loop.time()
            self._heard = False
            reason = "the connection ended"
            try:
                await self._serve(transport, http)
            except ConnectionLost as err:
                reason = str(err)
            finally:
                self._connected = False
                # Acks, heartbeats and questions are sent afresh on the next connection.
                self._outbox = deque(m for m in self._outbox if isinstance(m, ResultMessage))
                await _close_quietly(transport)
            if self._heard or loop.time() - started >= STABLE_SECONDS:
                attempt = 0
            delay = self._backoff.delay(attempt)
            attempt += 1
            log.warning("connection lost: %s; reconnecting in %.1f s", reason, delay)
            await self._sleep(delay)

    def _adopt(self, session: AgentSession) -> None:
        self._heartbeat = session.heartbeat_seconds
        if session.dev_mode:  # every connection: loud on purpose (`dev_mode` styles it red)
            log.warning(DEV_MODE_WARNING, extra={"dev_mode": True})
        if self._session is None:
            for skill in sorted(set(self._handlers) - session.skills):
                log.warning("skill %r has a handler but the agent card does not declare it", skill)
            for skill in sorted(session.skills - set(self._handlers)):
                log.warning("the agent card declares skill %r but nothing handles it", skill)
        self._session = session

    async def _serve(self, transport: Transport, http: httpx.AsyncClient) -> None:
        """Until the connection is lost: receive, send the outbox, heartbeat running tasks."""
        self._connected = True
        self._requeue()
        parts = [
            asyncio.create_task(self._receive(transport, http)),
            asyncio.create_task(self._send_outbox(transport)),
            asyncio.create_task(self._heartbeats()),
        ]
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            for part in done:
                part.result()
            raise ConnectionLost("the connection ended")
        finally:
            for part in parts:
                part.cancel()
            await asyncio.gather(*parts, return_exceptions=True)

    def _requeue(self) -> None:
        """On a new connection: the results Blocks has not acknowledged (they may be lost), then
        each question it has not acknowledged, then a heartbeat for each running task."""
        now = asyncio.get_running_loop().time()
        unconfirmed = self._unconfirmed
        for task_id in [t for t, (at, _) in unconfirmed.items() if now - at > UNCONFIRMED_SECONDS]:
            del unconfirmed[task_id]
        queued = {m.task_id for m in self._outbox}
        again = [m for _, m in unconfirmed.values() if m.task_id not in queued]
        self._outbox.extendleft(reversed(again))
        for job in self._jobs.values():
            if job.acked:
                self._post(StatusMessage(job.task.id))
            if job.question is not None and not job.question_taken:
                self._post(StatusMessage(job.task.id, INPUT_REQUIRED, question=job.question))
        self._wake.set()

    async def _send_outbox(self, transport: Transport) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._outbox:
                message = self._outbox[0]
                await transport.send(message)  # ConnectionLost leaves it at the head
                self._outbox.popleft()
                if isinstance(message, ResultMessage) and message.task_id not in self._unconfirmed:
                    self._unconfirmed[message.task_id] = (loop.time(), message)
                    if len(self._unconfirmed) > self._capacity:
                        self._unconfirmed.popitem(last=False)
            self._wake.clear()
            await self._wake.wait()

    async def _heartbeats(self) -> None:
        """Status WORKING for each running task: Blocks heartbeats its activity with it."""
        while True:
            await asyncio.sleep(self._heartbeat)
            for job in list(self._jobs.values()):
                if job.acked:
                    self._post(StatusMessage(job.task.id))

    async def _receive(self, transport: Transport, http: httpx.AsyncClient) -> None:
        async for message in transport.messages():
            self._heard = True
            if isinstance(message, TaskMessage):
                self._on_task(message, http)
            elif isinstance(message, CancelMessage):
                self._on_cancel(message)
            elif isinstance(message, InputMessage):
                self._on_input(message)
            elif isinstance(message, AckMessage):
                self._on_ack(message)
            else:
                log.debug("ignored a %s message from Blocks", message.type)

    def _post(self, message: Message) -> None:
        """Queue a message; while disconnected only results are kept (the rest is sent afresh)."""
        if not self._connected and not isinstance(message, ResultMessage):
            return
        self._outbox.append(message)
        self._wake.set()

    def _on_task(self, message: TaskMessage, http: httpx.AsyncClient) -> None:
        task_id = message.task_id
        done = self._finished.get(task_id)
        # A failure is run again when Blocks retries it (a higher attempt); anything else
        # delivered again gets the stored result, so a handler never completes a task twice.
        if done is not None and not (done[1].state == FAILED and message.attempt > done[0]):
            self._finished.move_to_end(task_id)
            self._post(AckMessage(task_id))
            self._post(done[1])
            log.info("task %s delivered again: its result is sent again", task_id)
            return
        job = self._jobs.get(task_id)
        if job is not None:
            if job.acked:
                self._post(AckMessage(task_id))
            return
        handler = self._handlers.get(message.skill)
        if handler is None:
            self._post(AckMessage(task_id))
            served = ", ".join(sorted(self._handlers))
            error = f"unknown skill {message.skill!r}; this agent serves: {served}"
            self._finish(task_id, ResultMessage(task_id, REJECTED, error=clip(error)), attempt=0)
            return
        task = Task(
            id=task_id,
            skill=message.skill,
            input=message.input or {},
            attempt=message.attempt,
            run_id=message.run_id,
            step=message.step,
            _channel=self,
        )
        job = _Job(task)
        self._jobs[task_id] = job
        if message.input_ref is None:
            # Acknowledged at once; a task passed by reference only once its input is fetched,
            # since an ack lets Blocks delete the stored input.
            job.acked = True
            self._post(AckMessage(task_id))
        job.handle = asyncio.create_task(
            self._run(job, handler, message.input_ref, http), name=f"blocks-agent-{task_id}"
        )

    async def _run(
        self, job: _Job, handler: Handler, input_ref: str | None, http: httpx.AsyncClient
    ) -> None:
        task = job.task
        where = f", run {task.run_id} step {task.step}" if task.run_id else ""
        log.info("task %s: %s, attempt %d%s", task.id, task.skill, task.attempt, where)
        try:
            if input_ref is not None:
                try:
                    task.input = await fetch_input(http, self._url, self._token, input_ref)
                except InputNotReady as err:
                    # Unacknowledged, so delivered again (with a fresh reference) and run then.
                    log.warning("task %s: %s; waiting for it to be delivered again", task.id, err)
                    self._jobs.pop(task.id, None)
                    return
                job.acked = True
                self._post(AckMessage(task.id))
            result = completed(task.id, await self._call(handler, task))
        except asyncio.CancelledError:
            if not job.cancel_requested:
                raise  # the runner is stopping: Blocks retries the task elsewhere or later
            result = ResultMessage(task.id, CANCELED)
        except TaskFailed as err:
            result = ResultMessage(task.id, FAILED, error=clip(str(err) or "failed"))
        except Exception as err:
            # The type only: an exception's message may quote the task's content.
            log.warning("task %s: the handler raised %s", task.id, type(err).__name__)
            log.debug("task %s: traceback", task.id, exc_info=True)
            result = ResultMessage(task.id, FAILED, error=clip(f"{type(err).__name__}: {err}"))
        self._finish(task.id, result, attempt=task.attempt)

    async def _call(self, handler: Handler, task: Task) -> object:
        if self._limit is None:
            return await invoke(handler, task)
        async with self._limit:
            return await invoke(handler, task)

    def _finish(self, task_id: str, result: ResultMessage, *, attempt: int) -> None:
        job = self._jobs.pop(task_id, None)
        if job is not None and not job.acked:
            self._post(AckMessage(task_id))
        self._finished[task_id] = (attempt, result)
        self._finished.move_to_end(task_id)
        while len(self._finished) > self._capacity:
            self._finished.popitem(last=False)
        self._post(result)
        log.info("task %s: %s", task_id, result.state.removeprefix("TASK_STATE_").lower())

    def _on_cancel(self, message: CancelMessage) -> None:
        job = self._jobs.get(message.task_id)
        if job is not None:
            job.cancel_requested = True
            job.task._cancelled = True
            if job.handle is not None:
                job.handle.cancel()
            log.info("task %s: cancelled by Blocks", message.task_id)
        elif message.task_id not in self._finished:
            # Cancelled before it arrived (or after a restart): never run it.
            self._finish(message.task_id, ResultMessage(message.task_id, CANCELED), attempt=0)

    def _on_input(self, message: InputMessage) -> None:
        """The answer to a question: acknowledged (Blocks delivers it until then), then handed
        to the waiting handler; a copy of an answer already handed over is only acknowledged."""
        task_id = message.task_id
        job = self._jobs.get(task_id)
        if job is None and task_id not in self._finished:
            # Not a task of this process (it restarted): Blocks' retry delivers the task again.
            log.info("task %s: an answer for a task this agent does not hold, ignored", task_id)
            return
        self._post(AckMessage(task_id))
        if job is not None and job.answer is not None and not job.answer.done():
            job.answer.set_result(message.answer)

    def _on_ack(self, message: AckMessage) -> None:
        """Blocks has taken the task's result, or its question: neither is sent again."""
        self._unconfirmed.pop(message.task_id, None)
        job = self._jobs.get(message.task_id)
        if job is not None and job.question is not None:
            job.question_taken = True

    # The Task's channel back to Blocks.
    def progress(self, task_id: str, message: str) -> None:
        if task_id in self._jobs:
            self._post(StatusMessage(task_id, message=message))

    async def ask(self, task_id: str, question: dict[str, Any]) -> dict[str, Any]:
        job = self._jobs.get(task_id)
        if job is None:
            raise RuntimeError(f"task {task_id} is over: nobody to ask")
        if job.answer is not None:
            raise RuntimeError("task.ask: one question at a time")
        job.question = question
        job.question_taken = False
        job.answer = asyncio.get_running_loop().create_future()
        self._post(StatusMessage(task_id, INPUT_REQUIRED, question=question))
        log.info("task %s: asked a person, waiting for the answer", task_id)
        try:
            return await job.answer
        finally:
            job.question = None
            job.answer = None


async def _close_quietly(transport: Transport) -> None:
    try:
        await transport.close()
    except Exception as err:  # closing a broken connection may fail; it is gone either way
        log.debug("closing the transport: %s", type(err).__name__)

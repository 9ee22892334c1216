"""A webhook receiver on 127.0.0.1 for tests: verifies what it is sent and answers from a script.

`running_receiver(secret)` starts a small Starlette app under uvicorn on a free port. Each request
is recorded (path, headers, raw body) with whether the `standardwebhooks` package verifies it
under the receiver's secrets. A request that does not verify is answered 401, as a real receiver
would; one that does takes the next answer of the script the test set (`answer(500, 500, 200)`,
`answer(Answer(302, {"location": ...}))`, `answer(Answer(200, hold=True))`), 200 once it is spent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blocks.infra.integrations.outbound_addresses import OutboundPolicy
from tests.support import free_port


@dataclass(frozen=True)
class Answer:
    """One scripted answer; `hold` keeps the request waiting until the receiver stops."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    hold: bool = False


@dataclass(frozen=True)
class Received:
    """One request as it arrived: headers (lower-cased names), the raw body, and the verdict."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


def verifies(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether `standardwebhooks` accepts this body and these headers under `secret` alone."""
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except Exception:  # a malformed signature entry raises ValueError, not the library's error
        return False
    return True


@dataclass
class WebhookReceiver:
    secrets: Sequence[str]
    port: int
    received: list[Received] = field(default_factory=list)
    _script: deque[Answer] = field(default_factory=deque)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def policy(self) -> OutboundPolicy:
        """The SSRF policy that admits this receiver (127.0.0.1 on its port) and nothing else."""
        return OutboundPolicy(allowed_private=frozenset({("127.0.0.1", self.port)}))

    def answer(self, *answers: int | Answer) -> None:
        """Script the next answers to verified requests, in order (replacing any left)."""
        self._script = deque(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def reset(self) -> None:
        """Forget what was received and any script left, to serve another test afresh."""
        self.received.clear()
        self._script.clear()

    def ids(self) -> list[str]:
        return [r.headers.get("webhook-id", "") for r in self.received]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = any(verifies(secret, headers, body) for secret in self.secrets)
        self.received.append(Received(request.url.path, headers, body, verified))
        if not verified:
            return Response("signature does not verify", status_code=401)
        answer = self._script.popleft() if self._script else Answer()
        if answer.hold:
            await self._released.wait()
        return Response(b"", status_code=answer.status, headers=dict(answer.headers))

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST", "GET"])])


@asynccontextmanager
async def running_receiver(
    *secrets: str, again: WebhookReceiver | None = None
) -> AsyncIterator[WebhookReceiver]:
    """A receiver accepting signatures under any of `secrets`, serving until the block ends;
    `again` serves that receiver once more on its port (a receiver back after an outage, what
    it received before kept)."""
    receiver = again or WebhookReceiver(secrets=secrets, port=free_port())
    receiver._released = asyncio.Event()
    server = uvicorn.Server(
        uvicorn.Config(
            receiver.app(),
            host="127.0.0.1",
            port=receiver.port,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # it could not start (the port was taken meanwhile): say why
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        receiver._released.set()  # held requests answer, so shutdown need not wait for them
        server.should_exit = True
        await task

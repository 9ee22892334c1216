"""The SSRF guard at call time: a listener on loopback counts every connection it is offered.

Requests through `guarded_client` in many spellings of loopback are refused and the listener
accepts nothing; with its port allowed by policy a request reaches it; a redirect it answers
(to the cloud metadata address) is never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from httpx_secure import SSRFProtectionError

from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    OutboundURLRefused,
    guarded_client,
    refuse_redirect,
)

METADATA = "http://169.254.169.254/latest/meta-data/"


@dataclass
class Listener:
    """A tiny HTTP server on 127.0.0.1 (and ::1 when it can) counting connections and requests."""

    answer: bytes
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            head = b""
        if head:
            self.requests.append(head.split(b"\r\n", 1)[0])
            writer.write(self.answer)
            await writer.drain()
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with _listening(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    ) as running:
        yield running


@pytest.fixture
async def redirector() -> AsyncIterator[Listener]:
    answer = (
        f"HTTP/1.1 302 Found\r\nlocation: {METADATA}\r\ncontent-length: 0\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    async with _listening(answer) as running:
        yield running


class _listening:
    def __init__(self, answer: bytes) -> None:
        self.listener = Listener(answer)
        self.servers: list[asyncio.Server] = []

    async def __aenter__(self) -> Listener:
        v4 = await asyncio.start_server(self.listener._serve, "127.0.0.1", 0)
        self.servers.append(v4)
        self.listener.port = v4.sockets[0].getsockname()[1]
        with contextlib.suppress(OSError):  # the same port on ::1, to count IPv6 spellings too
            self.servers.append(
                await asyncio.start_server(self.listener._serve, "::1", self.listener.port)
            )
        return self.listener

    async def __aexit__(self, *_: object) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()


def _spellings(port: int) -> list[str]:
    hosts = [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "017700000001",  # (httpx itself refuses dotted octal, 0177.0.0.1, as an invalid URL)
        "0.0.0.0",  # noqa: S104 - a URL's host under test, not a bind address
        "0",
        "localhost",
        "LOCALHOST.",
        "LocalHost",
        socket.gethostname(),
        "[::1]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[0:0:0:0:0:ffff:7f00:1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "[2002:7f00:1::]",
        "[64:ff9b::7f00:1]",
        "api.localhost",
        "0x7f.0x0.0x0.0x1",
    ]
    paths = [f"https://{h}:{port}/v1/models" for h in hosts]
    paths += [f"http://{h}:{port}/v1/models" for h in hosts]
    return [*paths, f"https://evil@127.0.0.1:{port}/", f"https://127.0.0.1:{port}#@example.com"]


async def test_loopback_in_every_spelling_is_refused_and_never_connected(
    listener: Listener,
) -> None:
    # Another host is allowed on this port, so plain http gets as far as the address check too.
    policy = OutboundPolicy(frozenset({("192.0.2.1", listener.port)}))
    refused: list[str] = []
    async with guarded_client(policy, timeout=5.0) as client:
        for url in _spellings(listener.port):
            with pytest.raises(OutboundURLRefused) as error:
                await client.get(url)
            refused.append(error.value.reason)
    assert len(refused) >= 40
    assert all("loopback" in r or "unspecified" in r or "user name" in r for r in refused), refused
    assert listener.connections == 0


async def test_the_connect_time_check_holds_without_the_precheck(listener: Listener) -> None:
    # httpx-secure's own check, under ours: an address literal is judged before any connection.
    async with guarded_client(OutboundPolicy(), timeout=5.0) as client:
        for host in ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"):
            request = client.build_request("GET", f"http://{host}:{listener.port}/")
            with pytest.raises(SSRFProtectionError):
                await httpx.AsyncClient.send(client, request)
    assert listener.connections == 0


async def test_an_allowed_port_is_reached_and_only_that_port(listener: Listener) -> None:
    async with _listening(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n") as other:
        policy = OutboundPolicy(frozenset({("127.0.0.1", listener.port)}))
        async with guarded_client(policy, timeout=5.0) as client:
            response = await client.get(f"http://127.0.0.1:{listener.port}/v1/models")
            assert response.status_code == 200
            assert response.text == "ok"
            with pytest.raises(OutboundURLRefused) as error:
                await client.get(f"http://127.0.0.1:{other.port}/v1/models")
        assert "uses plain http://" in error.value.reason or "loopback" in error.value.reason
        assert listener.connections == 1
        assert listener.requests == [b"GET /v1/models HTTP/1.1"]
        assert other.connections == 0


async def test_a_redirect_to_the_metadata_address_is_not_followed(redirector: Listener) -> None:
    policy = OutboundPolicy(frozenset({("127.0.0.1", redirector.port)}))
    async with guarded_client(policy, timeout=5.0) as client:
        response = await client.get(f"http://127.0.0.1:{redirector.port}/v1/chat/completions")
        assert response.status_code == 302
        with pytest.raises(OutboundURLRefused) as error:
            refuse_redirect(response)
        assert METADATA in error.value.reason
        # Even a caller asking to follow gets the 302 back: the hop is a URL nobody checked.
        again = await client.get(f"http://127.0.0.1:{redirector.port}/", follow_redirects=True)
        assert again.status_code == 302
    assert redirector.requests == [b"GET /v1/chat/completions HTTP/1.1", b"GET / HTTP/1.1"]


async def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    # Worth retrying later (DNS may be down), unlike a refusal.
    async with guarded_client(OutboundPolicy(), timeout=5.0) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("https://no-such-host.invalid/v1/models")


async def test_a_refusal_surfaces_through_the_openai_sdk(listener: Listener) -> None:
    # The LLM step hands this client to the official SDK, which lets our exception through.
    async with guarded_client(OutboundPolicy(), timeout=5.0) as http_client:
        llm = openai.AsyncOpenAI(
            api_key="sk-test",
            base_url=f"https://localhost:{listener.port}/v1",
            http_client=http_client,
            max_retries=0,
        )
        with pytest.raises(OutboundURLRefused, match="localhost names this machine"):
            await llm.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
    assert listener.connections == 0

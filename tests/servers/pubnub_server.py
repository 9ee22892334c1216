"""A local server speaking PubNub's REST protocol, so the real `pubnub` SDK can be tested offline.

Point the SDK at it with `config.origin = "127.0.0.1:PORT"` and `config.ssl = False`. One keyset,
from the environment (`PUBNUB_SERVER_PUBLISH_KEY`, `_SUBSCRIBE_KEY`, `_SECRET_KEY`), with Access
Manager on, as a production keyset would have it:

- a request carrying a valid request signature (the SDK signs every request when it holds the
  secret key) has every permission; a bad or stale signature is a 403;
- any other request needs `auth=<token>`: a token this server minted (its own signature checked),
  not expired, whose authorized uuid (if any) is the caller's, granting READ (subscribe, presence,
  here_now) or WRITE (publish) on every channel named, by name or by pattern; otherwise a 403
  naming the channels refused, in Access Manager's shape.

Implemented: `/time/0`; publish (GET with the message in the path, POST with it as the body;
over 32 KiB is a 413); subscribe (handshake with `tt=0`, then a long poll on `tt`, held until a
message arrives or `PUBNUB_SERVER_HOLD_SECONDS`, well under the SDK's 310 s); presence (`-pnpres`
channels with join/leave/timeout events, heartbeat, leave, here_now on one or several channels);
Access Manager v3 `grant` (v2 request signature verified; tokens are urlsafe base64 of CBOR with
the `=` padding kept, which the SDK's `parse_token()` reads). Every message is kept in memory, in
order of timetoken, so a long poll resumes after its cursor without loss.

Test hooks (not PubNub's): `GET /_messages?channel=` (what is stored, as it went over the wire),
`POST /_drop?channel=&count=` (accept the next publishes there and lose them, as live delivery
may), `POST /_presence/expire?uuid=` (time a client out now), `POST /_clock?advance=` (move the
clock that tokens and signatures are checked against), `GET /_stats` (counters), `GET /_denials`.
`running_pubnub_server()` runs the app with uvicorn in a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.servers.pubnub_pam import (
    MAX_TTL_MINUTES,
    READ,
    WRITE,
    allowed,
    mint_token,
    query_params,
    read_token,
    signature_valid,
)
from tests.servers.pubnub_state import PRESENCE, State, Stored

PUBLISH_KEY = os.environ.get("PUBNUB_SERVER_PUBLISH_KEY", "pub-c-local")
SUBSCRIBE_KEY = os.environ.get("PUBNUB_SERVER_SUBSCRIBE_KEY", "sub-c-local")
SECRET_KEY = os.environ.get("PUBNUB_SERVER_SECRET_KEY", "sec-c-local")
HOLD_SECONDS = float(os.environ.get("PUBNUB_SERVER_HOLD_SECONDS", "20"))
MAX_MESSAGE_BYTES = 32 * 1024


state: State


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    global state
    state = State()
    sweeper = asyncio.create_task(state.sweep())
    yield
    sweeper.cancel()


app = FastAPI(title="PubNub-protocol test server", openapi_url=None, lifespan=_lifespan)


# --- Access Manager ---------------------------------------------------------------------------


def _query(request: Request) -> dict[str, str]:
    return query_params(request.url.query)


def _signature_valid(request: Request, body: bytes) -> bool:
    return signature_valid(
        secret=SECRET_KEY,
        publish_key=PUBLISH_KEY,
        subscribe_key=SUBSCRIBE_KEY,
        method=request.method,
        raw_path=request.scope["raw_path"].decode(),
        raw_query=request.url.query,
        body=body,
        now=state.now(),
    )


def _forbidden(request: Request, channels: list[str], message: str = "Forbidden") -> JSONResponse:
    state.stats["denied"] += 1
    state.denials.append({"path": request.url.path, "channels": channels, "message": message})
    body = {
        "status": 403,
        "error": True,
        "message": message,
        "payload": {"channels": channels},
        "service": "Access Manager",
    }
    return JSONResponse(body, status_code=403)


async def _authorize(request: Request, needs: dict[str, int]) -> JSONResponse | None:
    """None if the request may act on these channels with these permission bits; else a 403."""
    params = _query(request)
    if "signature" in params:
        if _signature_valid(request, await request.body()):
            return None
        return _forbidden(request, list(needs), "Signature does not match")
    token = params.get("auth")
    grants, why = read_token(SECRET_KEY, token, state.now()) if token else (None, "")
    if grants is None:
        return _forbidden(request, list(needs), why or "Forbidden")
    if grants.get("uuid") and grants["uuid"] != params.get("uuid"):
        return _forbidden(request, list(needs), "Token is not authorized for this uuid")
    refused = [channel for channel, bit in needs.items() if not allowed(grants, channel, bit)]
    return _forbidden(request, refused) if refused else None


def _bad_key(sub: str, pub: str | None = None) -> JSONResponse | None:
    if sub != SUBSCRIBE_KEY or (pub is not None and pub != PUBLISH_KEY):
        body = {
            "status": 400,
            "error": True,
            "message": "Invalid Subscribe Key",
            "service": "Access Manager",
        }
        return JSONResponse(body, status_code=400)
    return None


@app.post("/v3/pam/{sub}/grant")
async def grant(sub: str, request: Request) -> Response:
    if refused := _bad_key(sub):
        return refused
    body = await request.body()
    if not _signature_valid(request, body):
        return _forbidden(request, [], "Signature does not match")
    data = json.loads(body)
    ttl = data.get("ttl")
    if not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_MINUTES:
        problem = {
            "status": 400,
            "error": True,
            "message": "Invalid ttl",
            "service": "Access Manager",
        }
        return JSONResponse(problem, status_code=400)
    token = mint_token(SECRET_KEY, ttl, data.get("permissions", {}), state.now())
    state.stats["grants"] += 1
    answer = {
        "status": 200,
        "data": {"message": "Success", "token": token},
        "service": "Access Manager",
    }
    return JSONResponse(answer)


# --- Publish and subscribe --------------------------------------------------------------------


@app.get("/time/0")
async def server_time() -> list[int]:
    return [state.next_tt()]


async def _publish(request: Request, pub: str, sub: str, channel: str, raw: str) -> Response:
    if refused := _bad_key(sub, pub):
        return refused
    if refused := await _authorize(request, {channel: WRITE}):
        return refused
    # PubNub counts the message as sent (escaped into a GET's path) with its channel name.
    size = len(quote(raw, safe="") if request.method == "GET" else raw.encode()) + len(channel)
    if size > MAX_MESSAGE_BYTES:
        return JSONResponse([0, "Message Too Large", str(state.next_tt())], status_code=413)
    try:
        payload = json.loads(raw)
    except ValueError:
        return JSONResponse([0, "Invalid JSON", str(state.next_tt())], status_code=400)
    params = _query(request)
    state.stats["publishes"] += 1
    if state.drop_next[channel] > 0:
        state.drop_next[channel] -= 1
        state.stats["dropped"] += 1
        return JSONResponse([1, "Sent", str(state.next_tt())])
    meta = json.loads(params["meta"]) if params.get("meta") else None
    tt = await state.store(channel, payload, params.get("uuid"), meta)
    return JSONResponse([1, "Sent", str(tt)])


@app.get("/publish/{pub}/{sub}/0/{channel}/0/{message:path}")
async def publish_get(pub: str, sub: str, channel: str, message: str, request: Request) -> Response:
    # The message is the rest of the raw path (it may hold an encoded "/"), decoded once.
    raw = unquote(request.scope["raw_path"].decode().split("/", 7)[7])
    return await _publish(request, pub, sub, channel, raw)


@app.post("/publish/{pub}/{sub}/0/{channel}/0")
async def publish_post(pub: str, sub: str, channel: str, request: Request) -> Response:
    return await _publish(request, pub, sub, channel, (await request.body()).decode())


def _channels(raw: str) -> list[str]:
    return [channel for channel in raw.split(",") if channel]


def _wire(message: Stored) -> dict[str, Any]:
    entry = {
        "a": "1",
        "f": 0,
        "p": {"t": str(message.timetoken), "r": 1},
        "k": SUBSCRIBE_KEY,
        "c": message.channel,
        "d": message.payload,
        "b": message.channel,
    }
    if message.publisher is not None:
        entry["i"] = message.publisher
    if message.meta is not None:
        entry["u"] = message.meta
    return entry


async def _heartbeat(channels: list[str], uuid: str, presence_timeout: str | None) -> None:
    seconds = float(presence_timeout) if presence_timeout else 300.0
    for channel in channels:
        if not channel.endswith(PRESENCE):
            await state.join(channel, uuid, seconds)


@app.get("/v2/subscribe/{sub}/{channels}/0")
async def subscribe(sub: str, channels: str, request: Request) -> Response:
    if refused := _bad_key(sub):
        return refused
    names = _channels(channels)
    if refused := await _authorize(request, dict.fromkeys(names, READ)):
        return refused
    params = _query(request)
    uuid = params.get("uuid", "")
    state.stats["subscribes"] += 1
    cursor = int(params.get("tt") or 0)
    if cursor == 0:
        # The handshake's cursor comes first, so the join it causes is delivered after it.
        handshake = state.next_tt()
        await _heartbeat(names, uuid, params.get("heartbeat"))
        return JSONResponse({"t": {"t": str(handshake), "r": 1}, "m": []})
    await _heartbeat(names, uuid, params.get("heartbeat"))
    wanted = set(names)
    state.stats["open_polls"] += 1
    try:
        async with state.arrived:
            await asyncio.wait_for(
                state.arrived.wait_for(lambda: bool(state.after(cursor, wanted))), HOLD_SECONDS
            )
    except TimeoutError:
        return JSONResponse({"t": {"t": str(cursor), "r": 1}, "m": []})
    finally:
        state.stats["open_polls"] -= 1
    found = state.after(cursor, wanted)
    return JSONResponse(
        {"t": {"t": str(found[-1].timetoken), "r": 1}, "m": [_wire(m) for m in found]}
    )


# --- Presence ---------------------------------------------------------------------------------


def _presence_ok() -> JSONResponse:
    return JSONResponse({"status": 200, "message": "OK", "service": "Presence"})


@app.get("/v2/presence/sub-key/{sub}/channel/{channels}/heartbeat")
async def heartbeat(sub: str, channels: str, request: Request) -> Response:
    names = _channels(channels)
    if refused := _bad_key(sub) or await _authorize(request, dict.fromkeys(names, READ)):
        return refused
    params = _query(request)
    await _heartbeat(names, params.get("uuid", ""), params.get("heartbeat"))
    return _presence_ok()


@app.get("/v2/presence/sub-key/{sub}/channel/{channels}/leave")
async def leave(sub: str, channels: str, request: Request) -> Response:
    names = _channels(channels)
    if refused := _bad_key(sub) or await _authorize(request, dict.fromkeys(names, READ)):
        return refused
    for channel in names:
        await state.part(channel, _query(request).get("uuid", ""), "leave")
    return _presence_ok()


@app.get("/v2/presence/sub-key/{sub}/channel/{channels}")
async def here_now(sub: str, channels: str, request: Request) -> Response:
    names = _channels(channels)
    if refused := _bad_key(sub) or await _authorize(request, dict.fromkeys(names, READ)):
        return refused
    with_uuids = _query(request).get("disable_uuids") != "1"

    def occupancy(channel: str) -> dict[str, Any]:
        occupants = sorted(state.here.get(channel, {}))
        return {"occupancy": len(occupants), **({"uuids": occupants} if with_uuids else {})}

    if len(names) == 1:
        return JSONResponse(
            {"status": 200, "message": "OK", **occupancy(names[0]), "service": "Presence"}
        )
    listed = {channel: occupancy(channel) for channel in names}
    payload = {
        "channels": {channel: data for channel, data in listed.items() if data["occupancy"]},
        "total_channels": len(names),
        "total_occupancy": sum(data["occupancy"] for data in listed.values()),
    }
    return JSONResponse({"status": 200, "message": "OK", "payload": payload, "service": "Presence"})


# --- Test hooks -------------------------------------------------------------------------------


@app.get("/_messages")
async def stored_messages(channel: str | None = None) -> list[dict[str, Any]]:
    return [
        {
            "timetoken": str(m.timetoken),
            "channel": m.channel,
            "payload": m.payload,
            "publisher": m.publisher,
        }
        for m in state.messages
        if channel is None or m.channel == channel
    ]


@app.post("/_drop")
async def drop(channel: str, count: int = 1) -> dict[str, int]:
    state.drop_next[channel] += count
    return {"pending": state.drop_next[channel]}


@app.post("/_presence/expire")
async def expire(uuid: str) -> dict[str, int]:
    timed_out = 0
    for channel, occupants in list(state.here.items()):
        if uuid in occupants:
            await state.part(channel, uuid, "timeout")
            timed_out += 1
    return {"channels": timed_out}


@app.post("/_clock")
async def clock(advance: float) -> dict[str, float]:
    state.clock_offset += advance
    return {"offset": state.clock_offset}


@app.get("/_stats")
async def stats() -> dict[str, int]:
    return dict(state.stats)


@app.get("/_denials")
async def denials() -> list[dict[str, Any]]:
    return state.denials


# --- Running it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PubNubServer:
    """A running server: where it is and its keyset."""

    port: int
    publish_key: str
    subscribe_key: str
    secret_key: str

    @property
    def origin(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_pubnub_server(
    *, hold_seconds: float = 20.0, within: float = 30.0
) -> Iterator[PubNubServer]:
    """This app under uvicorn in a process of its own on a free loopback port, with a fresh keyset."""
    server = PubNubServer(
        port=_free_port(),
        publish_key=f"pub-c-{secrets.token_hex(8)}",
        subscribe_key=f"sub-c-{secrets.token_hex(8)}",
        secret_key=f"sec-c-{secrets.token_urlsafe(24)}",
    )
    env = {
        **os.environ,
        "PUBNUB_SERVER_PUBLISH_KEY": server.publish_key,
        "PUBNUB_SERVER_SUBSCRIBE_KEY": server.subscribe_key,
        "PUBNUB_SERVER_SECRET_KEY": server.secret_key,
        "PUBNUB_SERVER_HOLD_SECONDS": str(hold_seconds),
    }
    args = [sys.executable, "-m", "uvicorn", f"{__name__}:app", "--host", "127.0.0.1",
            "--port", str(server.port), "--log-level", "warning", "--timeout-graceful-shutdown", "1"]  # fmt: skip
    process = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[2], env=env)
    try:
        deadline = time.monotonic() + within
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the PubNub-protocol server exited with {process.returncode}")
            try:
                httpx.get(f"{server.url}/_stats", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

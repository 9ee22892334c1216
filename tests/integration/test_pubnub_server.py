"""The local PubNub-protocol server, driven by the real `pubnub` SDK (sync and asyncio clients):
publish and subscribe with timetokens, presence, Access Manager grants and their enforcement."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import cbor2
import httpx
import pytest
from pubnub.crypto import AesCbcCryptoModule
from pubnub.endpoints.pubsub.subscribe import Subscribe
from pubnub.exceptions import PubNubException
from pubnub.models.consumer.v3.channel import Channel
from pubnub.pnconfiguration import PNConfiguration
from pubnub.pubnub import PubNub
from pubnub.pubnub_asyncio import PubNubAsyncio, SubscribeListener

from tests.servers.pubnub_server import PubNubServer, running_pubnub_server

WITHIN = 20.0


@pytest.fixture(scope="module")
def server() -> Iterator[PubNubServer]:
    with running_pubnub_server(hold_seconds=5) as running:
        yield running


def config(server: PubNubServer, uuid: str, *, secret: str | None = None) -> PNConfiguration:
    cfg = PNConfiguration()
    cfg.publish_key = server.publish_key
    cfg.subscribe_key = server.subscribe_key
    cfg.secret_key = secret
    cfg.user_id = uuid
    cfg.origin = server.origin
    cfg.ssl = False
    return cfg


def admin(server: PubNubServer) -> PubNub:
    """A sync client holding the secret key: it signs its requests and may grant."""
    return PubNub(config(server, "blocks-server", secret=server.secret_key))


def grant(server: PubNubServer, uuid: str, channels: list[Channel], ttl: int = 15) -> str:
    result = admin(server).grant_token().channels(channels).ttl(ttl).authorized_uuid(uuid).sync()
    return str(result.result.token)


def client(server: PubNubServer, uuid: str, token: str) -> PubNubAsyncio:
    pubnub = PubNubAsyncio(config(server, uuid))
    pubnub.set_token(token)
    return pubnub


def stored(server: PubNubServer, channel: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server.url}/_messages", params={"channel": channel}).json())


async def test_publish_and_subscribe_on_several_channels_with_timetokens(
    server: PubNubServer,
) -> None:
    reader = client(
        server, "reader", grant(server, "reader", [Channel.id("a").read(), Channel.id("b").read()])
    )
    writer = client(
        server,
        "writer",
        grant(server, "writer", [Channel.id("a").write(), Channel.id("b").write()]),
    )
    listener = SubscribeListener()
    reader.add_listener(listener)
    try:
        now = await writer.time().future()
        reader.subscribe().channels(["a", "b"]).execute()
        await asyncio.wait_for(listener.wait_for_connect(), WITHIN)
        sent_a = await writer.publish().channel("a").message({"n": 1}).future()
        sent_b = await writer.publish().channel("b").message({"n": 2}).use_post(True).future()
        first = await asyncio.wait_for(listener.wait_for_message_on("a"), WITHIN)
        second = await asyncio.wait_for(listener.wait_for_message_on("b"), WITHIN)
    finally:
        await reader.stop()
        await writer.stop()
    assert (first.message, first.publisher, first.timetoken) == (
        {"n": 1},
        "writer",
        sent_a.result.timetoken,
    )
    assert (second.message, second.timetoken) == ({"n": 2}, sent_b.result.timetoken)
    assert int(now.result) < sent_a.result.timetoken < sent_b.result.timetoken


async def test_a_long_poll_resumes_after_its_cursor(server: PubNubServer) -> None:
    """Messages published between two polls are delivered by the next, in order, none lost."""
    token = grant(server, "poller", [Channel.id("c").read().write()])
    pubnub = client(server, "poller", token)
    try:
        handshake = await Subscribe(pubnub).channels(["c"]).timetoken(0).future()
        cursor = handshake.result["t"]["t"]
        for n in range(3):
            await pubnub.publish().channel("c").message(n).future()
        poll = await Subscribe(pubnub).channels(["c"]).timetoken(cursor).future()
        again = await Subscribe(pubnub).channels(["c"]).timetoken(poll.result["t"]["t"]).future()
    finally:
        await pubnub.stop()
    assert [m["d"] for m in poll.result["m"]] == [0, 1, 2]
    assert again.result["m"] == []  # held, then answered empty: nothing after the cursor


async def next_presence(listener: SubscribeListener) -> Any:
    return await asyncio.wait_for(listener.presence_queue.get(), WITHIN)


async def test_presence_join_leave_timeout_and_here_now(server: PubNubServer) -> None:
    room = [Channel.id("room").read(), Channel.id("room-pnpres").read(), Channel.id("hall").read()]
    watcher = client(server, "watcher", grant(server, "watcher", room))
    guest = client(server, "guest", grant(server, "guest", room))
    # Leaves are sent only by a client that sends presence heartbeats.
    guest.config.enable_presence_heartbeat = True
    guest.config.set_presence_timeout(20)
    ghost = client(server, "ghost", grant(server, "ghost", room))
    listener = SubscribeListener()
    watcher.add_listener(listener)
    try:
        watcher.subscribe().channels(["room"]).with_presence().execute()
        await asyncio.wait_for(listener.wait_for_connect(), WITHIN)
        own = await next_presence(listener)
        guest.subscribe().channels(["room"]).execute()
        joined = await next_presence(listener)
        one = await watcher.here_now().channels(["room"]).future()
        several = await watcher.here_now().channels(["room", "hall"]).future()
        guest.unsubscribe_all()
        left = await next_presence(listener)
        ghost.subscribe().channels(["room"]).execute()
        assert (await next_presence(listener)).uuid == "ghost"
        async with httpx.AsyncClient(base_url=server.url) as hooks:
            (await hooks.post("/_presence/expire", params={"uuid": "ghost"})).raise_for_status()
        timed_out = await next_presence(listener)
    finally:
        for pubnub in (ghost, guest, watcher):
            await pubnub.stop()
    assert (own.event, own.uuid, own.channel) == ("join", "watcher", "room")
    assert (joined.event, joined.uuid, joined.occupancy) == ("join", "guest", 2)
    assert joined.timetoken > own.timetoken
    room_now = one.result.channels[0]
    assert (room_now.occupancy, sorted(o.uuid for o in room_now.occupants)) == (
        2,
        ["guest", "watcher"],
    )
    assert (several.result.total_channels, several.result.total_occupancy) == (2, 2)
    assert [c.channel_name for c in several.result.channels] == ["room"]
    assert (left.event, left.uuid, left.occupancy) == ("leave", "guest", 1)
    assert (timed_out.event, timed_out.uuid, timed_out.occupancy) == ("timeout", "ghost", 1)


def test_grant_token_is_read_by_parse_token(server: PubNubServer) -> None:
    pubnub = admin(server)
    channels = [
        Channel.id("jobs").read(),
        Channel.id("done").write(),
        Channel.pattern("^logs\\.").read(),
    ]
    token = grant(server, "agent-1", channels, ttl=60)
    parsed = pubnub.parse_token(token)
    assert token.endswith("=") or len(token) % 4 == 0  # padded base64
    assert (parsed["version"], parsed["ttl"], parsed["authorized_uuid"]) == (2, 60, "agent-1")
    assert parsed["resources"]["channels"]["jobs"]["read"] is True
    assert parsed["resources"]["channels"]["jobs"]["write"] is False
    assert parsed["resources"]["channels"]["done"]["write"] is True
    assert parsed["patterns"]["channels"]["^logs\\."]["read"] is True


def test_publish_outside_the_token_scope_is_403(server: PubNubServer) -> None:
    token = grant(server, "agent-2", [Channel.id("mine").write()])
    cfg = config(server, "agent-2")
    pubnub = PubNub(cfg)
    pubnub.set_token(token)
    assert pubnub.publish().channel("mine").message("ok").sync().result.timetoken > 0
    with pytest.raises(PubNubException) as refused:
        pubnub.publish().channel("theirs").message("no").sync()
    assert refused.value.get_status_code() == 403
    denial = httpx.get(f"{server.url}/_denials").json()[-1]
    assert denial["path"].startswith("/publish/")
    assert denial["channels"] == ["theirs"]
    # The same token under another uuid: refused too (the grant names its holder).
    other = PubNub(config(server, "someone-else"))
    other.set_token(token)
    with pytest.raises(PubNubException):
        other.publish().channel("mine").message("x").sync()


async def test_subscribe_and_here_now_outside_the_scope_are_403(server: PubNubServer) -> None:
    token = grant(server, "agent-3", [Channel.id("own").read()])
    pubnub = client(server, "agent-3", token)
    try:
        allowed = await Subscribe(pubnub).channels(["own"]).timetoken(0).future()
        refused = await Subscribe(pubnub).channels(["own", "other"]).timetoken(0).future()
        here = await pubnub.here_now().channels(["other"]).future()
    finally:
        await pubnub.stop()
    assert allowed.status.status_code == 200
    assert refused.status.status_code == 403
    assert "other" in str(refused.status.error_data.information)
    assert "own" not in str(refused.status.error_data.information).replace("Forbidden", "")
    assert here.status.status_code == 403


def test_a_tampered_or_expired_token_is_403(server: PubNubServer) -> None:
    token = grant(server, "agent-4", [Channel.id("t").read()])
    body = cbor2.loads(base64.urlsafe_b64decode(token))
    body["res"]["chan"]["t"] = 3  # widen the grant without the server's key
    forged = base64.urlsafe_b64encode(cbor2.dumps(body)).decode()
    pubnub = PubNub(config(server, "agent-4"))
    pubnub.set_token(forged)
    with pytest.raises(PubNubException) as tampered:
        pubnub.publish().channel("t").message(1).sync()
    assert tampered.value.get_status_code() == 403
    pubnub.set_token(token)
    assert pubnub.here_now().channels(["t"]).sync().result.total_occupancy == 0
    httpx.post(f"{server.url}/_clock", params={"advance": 16 * 60}).raise_for_status()
    try:
        with pytest.raises(PubNubException) as expired:
            pubnub.here_now().channels(["t"]).sync()
    finally:
        httpx.post(f"{server.url}/_clock", params={"advance": -16 * 60}).raise_for_status()
    assert expired.value.get_status_code() == 403
    assert httpx.get(f"{server.url}/_denials").json()[-1]["message"] == "Token is expired."


def test_a_grant_without_a_valid_signature_is_403(server: PubNubServer) -> None:
    wrong = PubNub(config(server, "intruder", secret="not-the-secret"))
    with pytest.raises(PubNubException) as refused:
        wrong.grant_token().channels([Channel.id("x").read()]).ttl(5).sync()
    assert refused.value.get_status_code() == 403
    unsigned = httpx.post(
        f"{server.url}/v3/pam/{server.subscribe_key}/grant",
        params={"uuid": "intruder", "timestamp": "1"},
        json={"ttl": 5, "permissions": {"resources": {"channels": {"x": 1}}}},
    )
    assert unsigned.status_code == 403
    assert unsigned.json()["service"] == "Access Manager"
    # A request signed with the secret key acts with every permission, as on PubNub.
    assert admin(server).publish().channel("anything").message(1).sync().result.timetoken > 0


async def test_encrypted_payloads_are_ciphertext_on_the_wire(server: PubNubServer) -> None:
    token = grant(server, "crypt", [Channel.id("secret").read().write()])
    cfg = config(server, "crypt")
    cfg.cipher_key = "a-per-agent-key"
    cfg.crypto_module = AesCbcCryptoModule(cfg)
    pubnub = PubNubAsyncio(cfg)
    pubnub.set_token(token)
    listener = SubscribeListener()
    pubnub.add_listener(listener)
    try:
        pubnub.subscribe().channels(["secret"]).execute()
        await asyncio.wait_for(listener.wait_for_connect(), WITHIN)
        await pubnub.publish().channel("secret").message({"marker": "PLAINTEXT-MARKER-42"}).future()
        received = await asyncio.wait_for(listener.wait_for_message_on("secret"), WITHIN)
    finally:
        await pubnub.stop()
    assert received.message == {"marker": "PLAINTEXT-MARKER-42"}
    raw = stored(server, "secret")
    assert len(raw) == 1
    assert "PLAINTEXT-MARKER-42" not in str(raw[0]["payload"])
    assert base64.b64decode(raw[0]["payload"]).startswith(b"PNED")  # the crypto module's header


def test_a_dropped_publish_is_acknowledged_but_never_delivered(server: PubNubServer) -> None:
    pubnub = admin(server)
    httpx.post(f"{server.url}/_drop", params={"channel": "lossy"}).raise_for_status()
    pubnub.publish().channel("lossy").message("lost").sync()
    pubnub.publish().channel("lossy").message("kept").sync()
    assert [m["payload"] for m in stored(server, "lossy")] == ["kept"]


def test_a_message_over_32_kib_is_refused(server: PubNubServer) -> None:
    pubnub = admin(server)
    with pytest.raises(PubNubException) as refused:
        pubnub.publish().channel("big").message("x" * 40_000).use_post(True).sync()
    assert refused.value.get_status_code() == 413

"""PubNub for remote agents, Blocks' side without the database: the keyset, channel names, Access
Manager grants, per-agent payload keys, sealing with the SDK's AES-256 crypto module, publishing.

Each agent has two channels: `blocks.<agent id>.tasks` (Blocks -> agent) and
`blocks.<agent id>.results` (agent -> Blocks). An agent's session carries an Access Manager token
granted with the secret key: READ on its tasks channel, WRITE on its results channel, for
TOKEN_TTL_MINUTES, bound to the PubNub uuid `blocks-agent.<agent token id>` (PubNub refuses the
token under any other uuid, so the publisher of a result names the Blocks token it came from).
Payloads are sealed with the SDK's AesCbcCryptoModule (AES-256-CBC, random IV) under a key
derived per agent from the organization's data key (HKDF): nothing to store, and PubNub sees only
ciphertext. Blocks' own client holds the secret key, so its requests are signed and need no
token. A sealed message over MAX_MESSAGE_BYTES would be refused by PubNub: the caller sends it by
reference instead.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pubnub.crypto import AesCbcCryptoModule, PubNubCryptoModule
from pubnub.exceptions import PubNubAsyncioException
from pubnub.models.consumer.v3.channel import Channel
from pubnub.pnconfiguration import PNConfiguration
from pubnub.pubnub_asyncio import PubNubAsyncio

from blocks.infra.settings import Settings

TOKEN_TTL_MINUTES = 60
# PubNub's cap on one published message (the escaped body with its channel name).
MAX_MESSAGE_BYTES = 32 * 1024
_ENVELOPE_MARGIN = 512  # room for the channel name and PubNub's own accounting
AGENT_UUID_PREFIX = "blocks-agent."
SERVER_UUID = "blocks-server"
_PREFIX = "blocks."
TASKS = "tasks"
RESULTS = "results"
PRESENCE_SUFFIX = "-pnpres"


class PubNubUnavailable(Exception):
    """PubNub refused or could not be reached (the reason names the operation, never content)."""


@dataclass(frozen=True)
class PubNubKeys:
    """The customer's keyset, and where the SDK should reach PubNub (None: PubNub's own)."""

    publish_key: str
    subscribe_key: str
    secret_key: str
    origin: str | None = None
    ssl: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> PubNubKeys | None:
        """The keyset if PubNub is configured (all three keys), else None."""
        secret = settings.pubnub_secret_key
        if not (settings.pubnub_publish_key and settings.pubnub_subscribe_key and secret):
            return None
        return cls(
            publish_key=settings.pubnub_publish_key,
            subscribe_key=settings.pubnub_subscribe_key,
            secret_key=secret.get_secret_value(),
            origin=settings.pubnub_origin,
            ssl=settings.pubnub_ssl,
        )


def tasks_channel(agent_id: uuid.UUID) -> str:
    return f"{_PREFIX}{agent_id}.{TASKS}"


def results_channel(agent_id: uuid.UUID) -> str:
    return f"{_PREFIX}{agent_id}.{RESULTS}"


def presence_channel(channel: str) -> str:
    return channel + PRESENCE_SUFFIX


def parse_channel(channel: str) -> tuple[uuid.UUID, str] | None:
    """(agent id, "tasks" | "results" | "tasks-pnpres" | ...) of one of our channels, else None."""
    prefix, _, rest = channel.partition(".")
    agent, _, kind = rest.partition(".")
    if f"{prefix}." != _PREFIX or not kind:
        return None
    try:
        return uuid.UUID(agent), kind
    except ValueError:
        return None


def agent_uuid(token_id: uuid.UUID) -> str:
    """The PubNub uuid an agent's Access Manager token is bound to."""
    return f"{AGENT_UUID_PREFIX}{token_id}"


def token_of_uuid(publisher: str | None) -> uuid.UUID | None:
    """The Blocks agent token id a PubNub uuid names, else None."""
    if not publisher or not publisher.startswith(AGENT_UUID_PREFIX):
        return None
    try:
        return uuid.UUID(publisher.removeprefix(AGENT_UUID_PREFIX))
    except ValueError:
        return None


def configuration(
    keys: PubNubKeys, user_id: str, *, with_secret: bool, cipher_key: str | None = None
) -> PNConfiguration:
    """An SDK configuration for this keyset; `with_secret` for Blocks' own client only."""
    config = PNConfiguration()
    config.publish_key = keys.publish_key
    config.subscribe_key = keys.subscribe_key
    config.secret_key = keys.secret_key if with_secret else None
    config.user_id = user_id
    config.ssl = keys.ssl
    if keys.origin:
        config.origin = keys.origin
    if cipher_key is not None:
        config.cipher_key = cipher_key
        config.crypto_module = AesCbcCryptoModule(config)
    return config


def server_client(keys: PubNubKeys) -> PubNubAsyncio:
    """Blocks' client: signs its requests with the secret key (grants, publishes, subscribes)."""
    return PubNubAsyncio(configuration(keys, SERVER_UUID, with_secret=True))


def cipher_key(org_secret: bytes, agent_id: uuid.UUID) -> str:
    """The agent's payload key: derived from the organization's data key, one per agent."""
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"blocks.agent-pubnub-cipher.v1|{agent_id}".encode(),
    ).derive(org_secret)
    return base64.urlsafe_b64encode(derived).decode().rstrip("=")


def crypto_for(cipher: str) -> PubNubCryptoModule:
    """The SDK's AES-256-CBC crypto module under `cipher` (what the agent's client configures)."""
    config = PNConfiguration()
    config.user_id = SERVER_UUID
    config.cipher_key = cipher
    return AesCbcCryptoModule(config)


def seal(crypto: PubNubCryptoModule, message: str) -> str:
    """A protocol message (JSON text) as the SDK's client would publish it: ciphertext, base64."""
    return str(crypto.encrypt(message))


def open_sealed(crypto: PubNubCryptoModule, payload: Any) -> dict[str, Any] | None:
    """A received payload opened (a JSON object), or None if it is not ours to read."""
    if not isinstance(payload, str):
        return None
    try:
        opened = crypto.decrypt(payload)
    except Exception:  # the SDK raises several kinds for a payload that is not its ciphertext
        return None
    return opened if isinstance(opened, dict) else None


def fits(channel: str, sealed: str) -> bool:
    """Whether a sealed message stays under PubNub's size cap once published (POST body)."""
    return len(json.dumps(sealed)) + len(channel) + _ENVELOPE_MARGIN <= MAX_MESSAGE_BYTES


async def grant_agent(
    pubnub: PubNubAsyncio, agent_id: uuid.UUID, token_id: uuid.UUID, ttl_minutes: int
) -> str:
    """An Access Manager token: read the agent's tasks, write its results, as its uuid only."""
    envelope = (
        await pubnub.grant_token()
        .channels(
            [
                Channel.id(tasks_channel(agent_id)).read(),
                Channel.id(results_channel(agent_id)).write(),
            ]
        )
        .ttl(ttl_minutes)
        .authorized_uuid(agent_uuid(token_id))
        .future()
    )
    if isinstance(envelope, PubNubAsyncioException) or envelope.status.is_error():
        raise PubNubUnavailable(f"grant_token: {_status(envelope)}")
    return str(envelope.result.token)


async def publish(pubnub: PubNubAsyncio, channel: str, sealed: str) -> None:
    """Publish one sealed message (POST: the body is not escaped into the URL)."""
    envelope = await pubnub.publish().channel(channel).message(sealed).use_post(True).future()
    if isinstance(envelope, PubNubAsyncioException) or envelope.status.is_error():
        raise PubNubUnavailable(f"publish: {_status(envelope)}")


def _status(envelope: Any) -> str:
    status = getattr(envelope, "status", None)
    code = getattr(status, "status_code", None)
    category = getattr(status, "category", None)
    return f"status {code}, {getattr(category, 'name', category)}"

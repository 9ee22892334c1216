"""The agent session: what `GET /v1/agent/session` tells an agent about itself and how to connect."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from blocks.agent.errors import AccessRefused, ConnectionLost, InputNotReady, SessionError
from blocks.agent.task import TaskFailed

SESSION_PATH = "/v1/agent/session"
DEV_AGENT_HEADER = "X-Blocks-Dev-Agent"
# An agent in dev mode without authentication names itself where a token would go: this prefix
# marks that credential (a token is `blkagent_...`, so the two never meet).
_DEV_AGENT = "dev-agent:"
DEV_MODE_WARNING = (
    "DEV MODE: connected WITHOUT a token (BLOCKS_AGENT_DEV_NO_AUTH); Blocks allows this only in "
    "dev mode on loopback. Never run an agent like this against a real deployment."
)
TRANSPORTS = frozenset({"relay", "pubnub"})
DEFAULT_HEARTBEAT_SECONDS = 10.0
# Statuses worth retrying: the server is starting, overloaded or restarting behind a proxy.
_TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AgentSession:
    """Who the token speaks for and how to reach Blocks. `pubnub` is the PubNub block as the
    server sends it (keys, Access Manager token, channels), read by the PubNub transport."""

    api_url: str
    agent: str
    agent_id: str
    org_id: str
    skills: frozenset[str]
    transport: str
    relay_url: str | None
    heartbeat_seconds: float
    pubnub: dict[str, Any] | None
    dev_mode: bool = False

    @classmethod
    def from_json(cls, api_url: str, body: object) -> AgentSession:
        """The session from the server's JSON; SessionError names the field that is wrong."""
        if not isinstance(body, dict):
            raise SessionError("session: not a JSON object")
        transport = body.get("transport")
        if transport not in TRANSPORTS:
            raise SessionError(
                f"transport: {transport!r} is not one this agent SDK speaks ({', '.join(sorted(TRANSPORTS))})"
            )
        skills = body.get("skills", [])
        if not isinstance(skills, list) or not all(isinstance(s, str) for s in skills):
            raise SessionError("skills: a list of skill ids")
        heartbeat = body.get("heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS)
        if heartbeat is None:
            heartbeat = DEFAULT_HEARTBEAT_SECONDS
        if (
            not isinstance(heartbeat, int | float)
            or isinstance(heartbeat, bool)
            or not math.isfinite(heartbeat)
            or heartbeat <= 0
        ):
            raise SessionError("heartbeat_seconds: a positive number")
        relay_url = body.get("relay_url")
        if relay_url is not None and not isinstance(relay_url, str):
            raise SessionError("relay_url: text")
        if transport == "relay":
            if not relay_url:
                raise SessionError("relay_url: required when the transport is the relay")
            relay_url = websocket_url(api_url, relay_url)
        pubnub = body.get("pubnub")
        if pubnub is not None and not isinstance(pubnub, dict):
            raise SessionError("pubnub: a JSON object")
        dev_mode = body.get("dev_mode", False)
        if not isinstance(dev_mode, bool):
            raise SessionError("dev_mode: true or false")
        return cls(
            api_url=api_url,
            agent=_text(body, "agent"),
            agent_id=_text(body, "agent_id"),
            org_id=_text(body, "org_id"),
            skills=frozenset(skills),
            transport=transport,
            relay_url=relay_url,
            heartbeat_seconds=float(heartbeat),
            pubnub=pubnub,
            dev_mode=dev_mode,
        )


async def fetch_session(http: httpx.AsyncClient, api_url: str, token: str) -> AgentSession:
    """Open a session: AccessRefused for a refused token (stop), ConnectionLost for what a retry
    may fix, SessionError for a URL that is not a Blocks API."""
    url = api_url.rstrip("/") + SESSION_PATH
    try:
        response = await http.get(url, headers=auth_headers(token))
    except httpx.HTTPError as err:
        raise ConnectionLost(f"cannot reach {url}: {type(err).__name__}") from None
    if response.status_code in (401, 403) and is_dev_agent(token):
        raise AccessRefused(
            f"{api_url} refused the dev agent {token.removeprefix(_DEV_AGENT)!r} "
            f"({response.status_code}{_detail(response)}): connecting without a token needs "
            "BLOCKS_AGENT_DEV_NO_AUTH on a Blocks in dev mode on this machine, and an agent of "
            "that name in its demo organization"
        )
    if response.status_code in (401, 403):
        raise AccessRefused(
            f"{api_url} refused the agent token ({response.status_code}{_detail(response)}): "
            "it is revoked, rotated or mistyped; issue a new one for this agent"
        )
    if response.status_code in _TRANSIENT:
        raise ConnectionLost(f"{url} answered {response.status_code}{_detail(response)}")
    if response.status_code != 200:
        raise SessionError(
            f"{url} answered {response.status_code}{_detail(response)}: is {api_url} the "
            "address of a Blocks API?"
        )
    try:
        body = response.json()
    except ValueError:
        raise SessionError(f"{url} did not answer JSON: is {api_url} a Blocks API?") from None
    return AgentSession.from_json(api_url.rstrip("/"), body)


async def fetch_input(
    http: httpx.AsyncClient, api_url: str, token: str, input_ref: str
) -> dict[str, Any]:
    """A task's input passed by reference, fetched from the API with the agent token (which is
    never sent to another server). InputNotReady for what a redelivery fixes, TaskFailed else."""
    url = str(httpx.URL(api_url.rstrip("/") + "/").join(input_ref))
    if not same_origin(url, api_url):
        raise TaskFailed("input_ref: not on the Blocks server this agent connects to")
    try:
        response = await http.get(url, headers=auth_headers(token))
    except httpx.HTTPError as err:
        raise InputNotReady(f"cannot fetch the input ({type(err).__name__})") from None
    if response.status_code == 410 or response.status_code in _TRANSIENT:
        raise InputNotReady(f"fetching the input answered {response.status_code}")
    if response.status_code != 200:
        raise TaskFailed(f"input_ref: fetching the input answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise TaskFailed("input_ref: the input is not JSON") from None
    if not isinstance(body, dict):
        raise TaskFailed("input_ref: the input is not a JSON object")
    return body


def dev_agent_credential(name: str) -> str:
    """What stands for the token of an agent that names itself (dev mode, no authentication)."""
    if not name.strip():
        raise ValueError("dev_agent: the agent's name")
    return f"{_DEV_AGENT}{name.strip()}"


def is_dev_agent(credential: str) -> bool:
    return credential.startswith(_DEV_AGENT)


def auth_headers(credential: str) -> dict[str, str]:
    """The agent token as `Authorization: Bearer`; a dev agent's name as X-Blocks-Dev-Agent."""
    if is_dev_agent(credential):
        return {DEV_AGENT_HEADER: credential.removeprefix(_DEV_AGENT)}
    return {"Authorization": f"Bearer {credential}"}


def websocket_url(api_url: str, relay_url: str) -> str:
    """The relay's WebSocket URL: a path is taken relative to the API, http(s) becomes ws(s)."""
    absolute = urljoin(api_url.rstrip("/") + "/", relay_url)
    parts = urlsplit(absolute)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise SessionError(f"relay_url: {parts.scheme!r} is not a WebSocket or HTTP scheme")
    return urlunsplit(parts._replace(scheme=scheme))


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs share scheme, host and port: the token is sent only to its own server."""
    return _origin(url) == _origin(other)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise SessionError(f"{name}: text")
    return value


def _detail(response: httpx.Response) -> str:
    """The problem+json `detail` of a refusal, if the server gave one (never the request)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return f": {detail[:300]}" if isinstance(detail, str) and detail else ""

"""Which transport carries an agent's messages: the one its session names."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from blocks.agent.errors import SessionError
from blocks.agent.relay import RelayTransport
from blocks.agent.session import AgentSession
from blocks.agent.transport import Transport

PUBNUB_MODULE = "blocks.agent.pubnub_transport"

TransportFactory = Callable[[AgentSession, str], Transport]


def open_transport(session: AgentSession, token: str) -> Transport:
    """The transport the session names."""
    if session.transport == "pubnub":
        # Loaded by name only when a session asks for it: a relay agent never imports pubnub.
        try:
            module = importlib.import_module(PUBNUB_MODULE)
        except ModuleNotFoundError as err:
            if err.name != PUBNUB_MODULE:
                raise
            raise SessionError(
                "this Blocks sends tasks over PubNub, which this agent SDK cannot speak yet "
                f"({PUBNUB_MODULE} is missing)"
            ) from None
        return module.PubNubTransport(session, token)  # type: ignore[no-any-return]
    return RelayTransport(session, token)

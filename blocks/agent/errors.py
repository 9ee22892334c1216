"""Why an agent stops or reconnects: the errors its runner and transports raise."""

from __future__ import annotations


class AgentError(Exception):
    """Something the agent cannot work around by retrying; the runner stops with it."""


class AccessRefused(AgentError):
    """Blocks refused the agent's token (401 or 403): revoked, rotated, mistyped or out of scope.

    The runner stops rather than retrying, so a revoked token never hammers the server."""


class SessionError(AgentError):
    """The URL does not lead to a Blocks agent session, or the session names what this SDK
    cannot do (an unknown transport, a missing relay URL)."""


class ConnectionLost(Exception):
    """A transient failure (refused, dropped, timed out, 5xx): the runner reconnects with backoff."""


class InputNotReady(Exception):
    """A task's input by reference cannot be fetched now (gone, expired, unreachable): the task
    is dropped unacknowledged, so Blocks delivers it again with a fresh reference."""

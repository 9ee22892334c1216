"""Dependency outages answer 503 problem+json with `Retry-After`, naming what is down, never 500.

PostgreSQL stopped, restarting or unreachable surfaces as a connection-class error from psycopg
(wrapped by SQLAlchemy, or as a pool timeout); Temporal unreachable as an `RPCError` whose status
says so. Both are transient: the engine's pool pings and replaces dead connections
(`pool_pre_ping`) and Temporal's client reconnects by itself, so once the dependency is back the
same process serves again without a restart.
"""

from __future__ import annotations

import logging

import psycopg
from sqlalchemy import exc as sa_exc
from temporalio.service import RPCError, RPCStatusCode

from blocks.api.errors import Problem, service_unavailable

_log = logging.getLogger("blocks.api")

# Temporal statuses that mean "not reachable now" rather than "refused".
_ENGINE_DOWN = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}
)


def _database_down(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
    # Connection-class errors (SQLSTATE 08xxx), shutdown and start-up (57P01-57P03), and a
    # server that cannot be reached at all are all psycopg OperationalErrors; so are the
    # transient conflicts (serialization failure, deadlock) a retry also resolves.
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _engine_down(exc: BaseException) -> bool:
    if isinstance(exc, RPCError):
        return exc.status in _ENGINE_DOWN
    # A lazy client that cannot reach Temporal raises a plain RuntimeError from the SDK's core
    # bridge; its message is the only thing that tells it apart.
    return isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect")


def outage_problem(exc: BaseException) -> Problem | None:
    """The 503 for an exception that means a dependency is down, else None."""
    if _database_down(exc):
        dependency, code = "the database", "database_unavailable"
    elif _engine_down(exc):
        dependency, code = "the workflow engine", "engine_unavailable"
    else:
        return None
    _log.warning("%s is unavailable (%s); answering 503", dependency, type(exc).__name__)
    return service_unavailable(f"{dependency} is unavailable; retry in a few seconds", code=code)

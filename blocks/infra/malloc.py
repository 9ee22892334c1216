"""The C allocator's settings for Blocks' long-lived processes: few malloc arenas (glibc).

glibc gives threads that allocate at the same time arenas of their own, up to eight per core,
and memory freed in one arena serves only that arena's threads. The API and the worker run many
short-lived threads beside their event loop (the Temporal SDK's Rust runtime starts blocking
threads under load, FastAPI and SQLAlchemy hand work to pools), so the free memory of a burst
is spread over up to 16 arenas on 2 cores and is held per arena. Two arenas keep it in one place
to be used again; the threads that allocate in parallel (the Rust core's) rarely contend for it.

MALLOC_ARENA_MAX in the environment is glibc's own switch and wins: this leaves it alone.
Elsewhere than glibc (musl, macOS) there is nothing to set.
"""

from __future__ import annotations

import ctypes
import os

# glibc's <malloc.h>: mallopt(M_ARENA_MAX, n).
_M_ARENA_MAX = -8
ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL(None)  # this process's own symbols, libc's among them
    except (ValueError, OSError):  # no such name here: not glibc
        return None


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` for threads that have none yet; True if set.

    Call it before the process starts threads (arenas already made stay in use)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, arenas))

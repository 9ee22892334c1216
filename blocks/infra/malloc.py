"""The C allocator's settings for Blocks' long-lived processes: few malloc arenas (glibc).

glibc gives threads that allocate at the same time arenas of their own, up to eight per core,
and memory freed in one arena is reused only by that arena's threads. The API and the worker run
threads beside their event loop (the Temporal SDK's Rust runtime adds blocking threads under
load), so a burst leaves its free memory spread over many arenas, each holding its share. With
two, under `python -m bench.deployed` the API peaked about 7 MB lower and the worker about 11 MB,
at the same CPU per run.

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

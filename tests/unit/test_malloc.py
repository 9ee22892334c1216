"""The malloc arena cap of `blocks api` and `blocks worker` (infra.malloc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from blocks.infra.malloc import limit_malloc_arenas

GLIBC = "CS_GNU_LIBC_VERSION" in getattr(os, "confstr_names", {}) and bool(
    os.confstr("CS_GNU_LIBC_VERSION")
)


def test_malloc_arena_max_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False


@pytest.mark.skipif(not GLIBC, reason="the cap is glibc's")
def test_glibc_takes_the_cap() -> None:
    # In a process of its own: the cap stays for the life of the process that sets it.
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    code = "from blocks.infra.malloc import limit_malloc_arenas as f; print(f())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert out.stdout.strip() == b"True"

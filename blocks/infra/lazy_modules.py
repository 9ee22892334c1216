"""Modules a process loads on first use: large libraries that most processes never call.

`lazy_module("zxcvbn")` returns a stand-in for the module at once, and imports the module only
when one of its attributes is first read. So the module-level name stands where an import
statement would, and the cost (zxcvbn's word lists are about 12 MB resident, aiohttp about 8 MB)
is paid by a process that calls it, once: `blocks api` pays for zxcvbn at its first new
password, and no process pays for aiohttp until Slack is called. A module some other code has
imported already is returned as it is.

The stand-in stays out of `sys.modules` until then, and carries `__file__` itself: code that
walks every loaded module (`inspect.getmodule`, which pydantic calls for attribute docstrings,
reads each one's `__file__`) neither sees it nor loads it. (The standard library's
`LazyLoader` put a module in `sys.modules` that any attribute read, `__file__` included, loaded.)

For a dotted name the parent packages are imported at once (only the leaf is deferred).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

_stand_ins: dict[str, ModuleType] = {}


class _Deferred(ModuleType):
    """A module's stand-in: the first attribute it lacks imports the module and takes its names."""

    def __getattr__(self, attr: str) -> Any:
        # Only called for names not in this object's own namespace: after the first import,
        # every one of the module's names is there and this is never called again for them.
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        _stand_ins.pop(self.__name__, None)  # from now on, sys.modules holds the module
        return getattr(module, attr)


def lazy_module(name: str) -> ModuleType:
    """`name`, imported when one of its attributes is first read (see the module docstring)."""
    if name in sys.modules:
        return sys.modules[name]
    if name in _stand_ins:
        return _stand_ins[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    stand_in = _Deferred(name)
    stand_in.__file__ = spec.origin
    _stand_ins[name] = stand_in
    return stand_in

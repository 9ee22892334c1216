"""Parsing Blocks' sources for the lint tests, safely in a long test session."""

from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor

_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ast-parse")


def parse(source: str) -> ast.Module:
    """`ast.parse` on a thread of its own. In the pytest thread, after many tests have run
    (greenlet switches of SQLAlchemy's async sessions among them), CPython 3.11's AST validator
    can find the thread's recursion bookkeeping off and raise `SystemError: AST constructor
    recursion depth mismatch` on a valid file; a thread that only parses keeps it exact."""
    return _pool.submit(ast.parse, source).result()

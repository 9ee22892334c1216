"""Parsing Blocks' sources for the lint tests, safely in a long test session."""

from __future__ import annotations

import ast

_ATTEMPTS = 5


def parse(source: str) -> ast.Module:
    """`ast.parse`, tried again on CPython 3.11's spurious `SystemError: AST constructor
    recursion depth mismatch`: its AST validator keeps one recursion counter per interpreter, not
    per thread, so a compile running at the same moment in another thread (a Temporal worker's
    sandbox importing a workflow module, left from an earlier test) can skew it. A valid file
    parses on the next try; a real error is raised as it is."""
    for _ in range(_ATTEMPTS - 1):
        try:
            return ast.parse(source)
        except SystemError as err:
            if "recursion depth mismatch" not in str(err):
                raise
    return ast.parse(source)

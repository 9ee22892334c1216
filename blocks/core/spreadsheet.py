"""CSV text a spreadsheet will not run: a cell that could start a formula gets a leading '."""

from __future__ import annotations

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse_formula(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text

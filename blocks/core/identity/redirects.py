"""Where a browser may be sent after sign-in: only to a path on this site, never elsewhere."""

from __future__ import annotations

from urllib.parse import urlsplit

HOME = "/"


def safe_next(candidate: str | None) -> str:
    """`candidate` if it is a plain path on this site, else the home page.

    Refused: absolute URLs, scheme-relative `//host`, backslash tricks browsers read as `//`,
    and control characters (a tab or newline inside `/\\t/evil.example` is dropped by browsers).
    """
    if not candidate or not candidate.startswith("/"):
        return HOME
    if any(ord(ch) < 0x20 or ch == "\\" for ch in candidate):
        return HOME
    if candidate.startswith("//"):
        return HOME
    parts = urlsplit(candidate)
    if parts.scheme or parts.netloc:
        return HOME
    return candidate

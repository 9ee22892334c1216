"""Minimal server-rendered pages for links people open from email (decision, sign-in, invite)."""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

# Tokens travel in these pages' URLs: never cache them, never send them on in a Referer, never
# frame them, run no script, and post forms only back to this site.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A page titled `title` around `body`, which the caller has already escaped."""
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:40em;margin:3em auto}"
        "label{display:block;margin:.5em 0}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=PAGE_HEADERS)


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def form(fields: str, button: str, *, action: str = "") -> str:
    """A POST form back to this page (or `action`), with `fields` already escaped."""
    target = f" action='{html.escape(action)}'" if action else ""
    return f"<form method='post'{target}>{fields}<button>{html.escape(button)}</button></form>"


def hidden(name: str, value: str) -> str:
    return f"<input type='hidden' name='{html.escape(name)}' value='{html.escape(value)}'>"


def field(label: str, name: str, *, kind: str = "text", autocomplete: str = "off") -> str:
    return (
        f"<label>{html.escape(label)} <input type='{kind}' name='{html.escape(name)}'"
        f" autocomplete='{autocomplete}' required></label>"
    )

"""Rich text in comments and step descriptions: a small HTML subset, sanitized by nh3 (Ammonia) on
input and again on render, so script, event handlers, styles, and `javascript:`/`data:` URLs never
survive, whatever editor the text was pasted from."""

from __future__ import annotations

import html

import nh3

# Enough for a comment or a request's description: emphasis, lists, quotes, code, links. No
# images (a tracking pixel, or a data: URL), no tables, no style, no forms, no iframes.
ALLOWED_TAGS = frozenset(
    {
        "p",
        "br",
        "strong",
        "b",
        "em",
        "i",
        "u",
        "s",
        "code",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "li",
        "a",
    }
)
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {"a": {"href", "title"}}
# Links only to the web and to mail: no javascript:, data:, vbscript:, file: or relative tricks.
URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Tags whose content goes with them (not kept as text): a stripped <script> leaves nothing.
DROPPED_WITH_CONTENT = frozenset(
    {"script", "style", "template", "svg", "math", "noscript", "iframe"}
)
# A link opens the other site without it learning about, or reaching back into, this page.
LINK_REL = "noopener noreferrer nofollow"


def sanitize(text: str) -> str:
    """`text` with everything outside the allow-list removed (never raises)."""
    return nh3.clean(
        text,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
        # A relative or protocol-relative link ("/x", "//evil.example") points wherever the page
        # that shows it lives: only absolute web and mail links are kept.
        url_relative="deny",
    )


def plain_text(text: str) -> str:
    """The words of `text` without any markup (for audit data, notifications and titles)."""
    # nh3 answers HTML (its text escaped): unescaped, it is the words as they read.
    return html.unescape(nh3.clean(text, tags=set(), clean_content_tags=set(DROPPED_WITH_CONTENT)))

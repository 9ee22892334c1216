"""Rich text (infra.content.rich_text): every payload of the XSS corpus comes out of `sanitize`
with nothing executable left, read back by an HTML parser (not by searching the text): only the
allow-listed tags, no event handler or style attribute, and links only to http(s) and mail. The
allowed subset itself survives, and sanitizing twice changes nothing."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from blocks.infra.content.rich_text import ALLOWED_TAGS, plain_text, sanitize
from tests.xss_corpus import XSS_PAYLOADS

FORBIDDEN_TAGS = {
    "script",
    "style",
    "svg",
    "math",
    "iframe",
    "img",
    "object",
    "embed",
    "form",
    "input",
    "meta",
    "link",
    "base",
    "noscript",
    "template",
    "textarea",
    "title",
    "video",
    "source",
    "details",
    "marquee",
    "xmp",
}
SAFE_SCHEMES = ("http:", "https:", "mailto:")


class _Elements(HTMLParser):
    """Every start tag with its attributes, as a browser's tokenizer reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))


def executable_parts(html: str) -> list[str]:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    found = []
    for tag, attrs in parser.elements:
        if tag in FORBIDDEN_TAGS or tag not in ALLOWED_TAGS:
            found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in ("style", "src", "srcdoc", "action", "formaction"):
                found.append(f"<{tag} {name}>")
            if name in ("href", "xlink:href") and not (value or "").strip().lower().startswith(
                SAFE_SCHEMES
            ):
                found.append(f"<{tag} {name}={value!r}>")
    return found


def test_the_corpus_is_large_enough() -> None:
    assert len(XSS_PAYLOADS) >= 50
    assert len(set(XSS_PAYLOADS)) == len(XSS_PAYLOADS)


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_nothing_executable_survives(payload: str) -> None:
    cleaned = sanitize(payload)
    assert executable_parts(cleaned) == [], cleaned
    # Sanitized text is a fixed point: sanitizing on render again changes nothing.
    assert sanitize(cleaned) == cleaned


def test_the_check_itself_catches_what_it_looks_for() -> None:
    """The parser-based check is not vacuous: raw payloads fail it."""
    caught = [p for p in XSS_PAYLOADS if executable_parts(p)]
    assert len(caught) >= 45
    assert executable_parts('<a href="/x">x</a>') == ["<a href='/x'>"]
    assert executable_parts('<p onclick="x">y</p>') == ["<p onclick>"]


def test_the_allowed_subset_is_kept() -> None:
    text = (
        "<p>Within <strong>budget</strong>, see <a href='https://wiki.example/q3'>Q3</a> "
        "or <a href='mailto:fin@acme.example'>finance</a>.</p><ul><li><em>one</em></li></ul>"
        "<blockquote>quoted</blockquote><pre><code>x = 1</code></pre>"
    )
    cleaned = sanitize(text)
    assert '<a href="https://wiki.example/q3" rel="noopener noreferrer nofollow">Q3</a>' in cleaned
    assert "<strong>budget</strong>" in cleaned
    assert "<ul><li><em>one</em></li></ul>" in cleaned
    assert "<pre><code>x = 1</code></pre>" in cleaned


def test_plain_words_stay_readable() -> None:
    assert sanitize("Tom & Jerry: 3 < 4") == "Tom &amp; Jerry: 3 &lt; 4"
    assert plain_text("<b>Tom</b> &amp; <script>x</script>Jerry") == "Tom & Jerry"

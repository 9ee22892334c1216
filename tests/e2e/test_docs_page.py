"""The /docs page over HTTP: no inline code, its files served from the installed package with
their content types and long caching, nothing else served under /docs/assets, and FastAPI's
own CDN-loading pages gone. tests/browser/test_api_docs.py runs it in a browser."""

from __future__ import annotations

from html.parser import HTMLParser

from tests.support import Stack


class _Page(HTMLParser):
    """What a page loads, and any inline script, inline style or event handler in it."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        names = {name for name, _ in attrs}
        if "style" in names or any(name.startswith("on") for name in names):
            self.inline.append(f"<{tag}> attribute")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = True
            if values.get("src"):
                self.scripts.append(str(values["src"]))
        if tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(str(values["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("<script> body")


async def test_the_page_has_no_inline_code_and_its_files_come_from_this_site(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        answer = await http.get("/docs")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert answer.headers["cache-control"] == "no-store"
        page = _Page()
        page.feed(answer.text)
        assert page.inline == []
        assert [src.rsplit("/", 1)[1] for src in page.scripts] == [
            "swagger-ui-bundle.js",
            "docs-init.js",
        ]
        assert [href.rsplit("/", 1)[1] for href in page.stylesheets] == ["swagger-ui.css"]
        assert 'data-openapi-url="/openapi.json"' in answer.text

        files = {url: await http.get(url) for url in [*page.scripts, *page.stylesheets]}
    for url, file in files.items():
        assert url.startswith("/docs/assets/"), url
        assert file.status_code == 200, url
        assert file.headers["cache-control"] == "public, max-age=31536000, immutable", url
        assert file.headers["x-content-type-options"] == "nosniff", url
        assert "etag" in file.headers, url
    bundle, init = (files[src] for src in page.scripts)
    assert bundle.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "SwaggerUIBundle" in bundle.text
    assert init.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "SwaggerUIBundle({" in init.text
    css = files[page.stylesheets[0]]
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert ".swagger-ui" in css.text


async def test_only_the_named_files_are_served_and_only_under_the_current_digest(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        page = _Page()
        page.feed((await http.get("/docs")).text)
        current = page.scripts[0].rsplit("/", 1)[0]
        stale = "/docs/assets/0000000000000000"
        refused = [
            await http.get(f"{current}/redoc.standalone.js"),  # in the package, not served
            await http.get(f"{current}/..%2F..%2Fdocs.py"),
            await http.get(f"{current}/../docs-init.js"),
            await http.get(f"{stale}/swagger-ui-bundle.js"),
        ]
        # FastAPI's own pages, which load their code from a CDN, are gone.
        gone = [await http.get("/redoc"), await http.get("/docs/oauth2-redirect")]
        document = (await http.get("/openapi.json")).json()
    for answer in [*refused, *gone]:
        assert answer.status_code == 404, answer.url
        assert answer.headers["content-type"] == "application/problem+json", answer.url
    assert not any(path.startswith("/docs") for path in document["paths"])

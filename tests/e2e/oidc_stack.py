"""A real OpenID Provider for the SSO tests (panva's oidc-provider, tests/tools/oidc-provider) and
a browser that signs in through it: Blocks' start, the provider's pages, Blocks' callback.

The provider runs as `node op.js <config.json>` on 127.0.0.1; `npm ci` installs it the first
time (node_modules is not committed). The browser keeps Blocks' cookies itself: they are
`__Host-` cookies (Secure), which an HTTP client will not send back over plain http to the test
server, while a browser at the public https URL would.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx

from tests.support import Stack

OP_DIR = Path(__file__).resolve().parents[1] / "tools" / "oidc-provider"
# What the Makefile's test target runs too; here for a checkout that has not run it yet.
NPM_CI = ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(OP_DIR)]
_START_SECONDS = 30.0


def install_op() -> None:
    """`npm ci` the provider's package when its node_modules is missing."""
    if not (OP_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        subprocess.run(NPM_CI, check=True, timeout=600, capture_output=True)


class OpenIdProvider:
    """`node op.js` with a config (see op.js); `restart` starts it afresh with new signing keys."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self._config_path = workdir / "op.json"
        self._config_path.write_text(json.dumps(config))
        self._log_path = workdir / "op.log"
        self._process: subprocess.Popen[str] | None = None
        self.issuer = ""

    def start(self) -> None:
        with self._log_path.open("a") as log:
            process = subprocess.Popen(
                ["node", str(OP_DIR / "op.js"), str(self._config_path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self._process = process
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        line = process.stdout.readline() if selector.select(timeout=_START_SECONDS) else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the OpenID Provider did not start: {self._log_path.read_text()}")
        self.issuer = str(json.loads(line)["issuer"])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_op(config: dict[str, Any], workdir: Path) -> Iterator[OpenIdProvider]:
    """The provider, configured by `config` (see op.js), until the block ends."""
    op = OpenIdProvider(config, workdir)
    op.start()
    try:
        yield op
    finally:
        op.stop()


@dataclass
class Browser:
    """One browser: the provider's cookies in `op`, Blocks' kept by hand (see the module)."""

    stack: Stack
    op: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=30))
    cookies: dict[str, str] = field(default_factory=dict)
    last_callback: str | None = None

    async def aclose(self) -> None:
        await self.op.aclose()

    def _keep_cookies(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                if morsel["max-age"] == "0" or not morsel.value or morsel.value == '""':
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def blocks(self, path: str) -> httpx.Response:
        """GET a path of Blocks with this browser's cookies."""
        async with self.stack.http() as http:
            cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            response = await http.get(path, headers={"Cookie": cookie} if cookie else {})
        self._keep_cookies(response)
        return response

    async def start(self, org_slug: str, provider_id: object, **params: str) -> str:
        """Blocks' start: the provider URL it redirects to."""
        query = urllib.parse.urlencode({"next": "/runs", **params})
        response = await self.blocks(f"/v1/sso/{org_slug}/{provider_id}/start?{query}")
        assert response.status_code == 303, response.text
        return response.headers["location"]

    async def through_op(self, url: str) -> httpx.Response:
        """Follow the provider's redirects (its login and consent) until it sends the browser
        elsewhere (Blocks' public URL) or answers without a redirect."""
        response = await self.op.get(url)
        while response.status_code in (302, 303) and not response.headers["location"].startswith(
            self.stack.settings.public_url
        ):
            response = await self.op.get(response.url.join(response.headers["location"]))
        return response

    async def callback_url(self, url: str) -> str:
        """Through the provider to the callback URL it sends the browser to (path and query)."""
        response = await self.through_op(url)
        assert response.status_code in (302, 303), response.text
        location = response.headers["location"]
        assert location.startswith(self.stack.settings.public_url), location
        return location.removeprefix(self.stack.settings.public_url)

    async def callback(self, path: str) -> httpx.Response:
        self.last_callback = path
        return await self.blocks(path)

    async def sign_in(self, org_slug: str, provider_id: object, user: str) -> httpx.Response:
        """The whole flow: start, the provider, the callback (Blocks' answer to it)."""
        url = await self.start(org_slug, provider_id, login_hint=user)
        return await self.callback(await self.callback_url(url))


def with_query(url: str, **changes: str | None) -> str:
    """`url` with query parameters replaced (None: removed)."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return parts._replace(query=urllib.parse.urlencode(query)).geturl()


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))

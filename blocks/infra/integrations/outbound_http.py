"""The SSRF guard for every URL an organization configures: checked when saved, and again when called.

`check_outbound_url` is the save-time check (https only, no credentials in the URL, every address
the host resolves to public, unless the admin allowed that host:port). `guarded_client` is the
only client such URLs are called with: httpx-secure validates the address at connect time and
connects to that same address (no DNS rebinding), redirects are never followed, and a refusal at
call time raises `OutboundURLRefused` too, so callers map one exception type to "refused".
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx._client import UseClientDefault
from httpx_secure import SSRFProtectionError, httpx_ssrf_protection

from blocks.infra.integrations.outbound_addresses import (
    IPAddress,
    OutboundPolicy,
    non_public_kind,
)

__all__ = [
    "OutboundPolicy",
    "OutboundURLRefused",
    "check_outbound_url",
    "guarded_client",
    "refuse_redirect",
]

_MAX_URL_CHARS = 2048
_RESOLVE_SECONDS = 10.0
_PUBLIC_ONLY = "Blocks only calls public addresses"
# RFC 6761: `localhost` and every name under it are this machine, whatever a resolver answers;
# the other two are Debian's and Red Hat's usual aliases for it.
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
# What httpx accepts as `auth` (its own alias lives in a private module).
_Auth = tuple[str | bytes, str | bytes] | Callable[[httpx.Request], httpx.Request] | httpx.Auth


class OutboundURLRefused(ValueError):
    """A URL Blocks will not call; `reason` says why in a sentence the user can act on."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(reason)
        self.url = _redact(url)
        self.reason = reason


class _Unresolved(Exception):
    """The host did not resolve: refused when a URL is saved, a ConnectError when it is called."""


def _redact(url: str) -> str:
    # A user:password before the host must not travel on into logs and error answers.
    parts = urlsplit(url) if len(url) <= _MAX_URL_CHARS else None
    if parts is None or "@" not in parts.netloc:
        return url[:_MAX_URL_CHARS]
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _is_loopback_name(host: str) -> bool:
    name = host.lower().removesuffix(".")
    return name in _LOOPBACK_NAMES or name.endswith(".localhost")


class _NotAURL(OutboundURLRefused):
    """httpx cannot parse the URL; the save-time check still says where it would lead."""


def _shape(url: str) -> tuple[str, str, str, int]:
    """(scheme, host as connected to, host as shown, port) of a URL of an acceptable shape."""
    if len(url) > _MAX_URL_CHARS:
        raise OutboundURLRefused(url, f"is longer than {_MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise _NotAURL(url, f"is not a valid URL ({error})") from None
    scheme = parsed.scheme
    if scheme not in ("https", "http"):
        shown = f"{scheme}://" if scheme else "no scheme"
        raise OutboundURLRefused(url, f"uses {shown}; Blocks only calls https:// URLs")
    if parsed.userinfo or "@" in parsed.netloc.decode("ascii", "replace"):
        raise OutboundURLRefused(
            url,
            "has a user name or password before the host (user@host); "
            "Blocks refuses credentials in URLs, put them in the key field instead",
        )
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise OutboundURLRefused(url, "has no host")
    port = parsed.port if parsed.port is not None else (443 if scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise OutboundURLRefused(url, f"has port {port}, which is not a port (1-65535)")
    return scheme, host, parsed.host, port


def _plain_http(url: str) -> OutboundURLRefused:
    # Plain http is for an allowed private service only (e.g. a model server on the LAN).
    return OutboundURLRefused(
        url,
        "uses plain http://; Blocks only calls https:// URLs (http:// only for a private "
        "host:port allowed in BLOCKS_OUTBOUND_ALLOW_PRIVATE)",
    )


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself), without blocking the loop."""
    try:
        return [ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(_RESOLVE_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TimeoutError) as error:
        raise _Unresolved(str(error) or "timed out") from error
    addresses = {ip_address(str(info[4][0])) for info in infos}
    if not addresses:
        raise _Unresolved("no addresses")
    return sorted(addresses, key=lambda a: (a.version, int(a)))


def _refusal_for(url: str, shown: str, address: IPAddress, kind: str) -> OutboundURLRefused:
    if _is_ip(shown) and ip_address(shown) == address:
        return OutboundURLRefused(url, f"{shown} is {kind}; {_PUBLIC_ONLY}")
    return OutboundURLRefused(url, f"{shown} resolves to {address}, {kind}; {_PUBLIC_ONLY}")


async def _explain_unparsable(url: str, refused: _NotAURL) -> OutboundURLRefused:
    """For a URL httpx refuses (0177.0.0.1), name the non-public address it spells, if any."""
    host = urlsplit(url).hostname
    if host:
        try:
            addresses = await _resolve(host, 443)
        except _Unresolved:
            return refused
        for address in addresses:
            kind = non_public_kind(address)
            if kind is not None:
                return _refusal_for(url, host, address, kind)
    return refused


async def _check(url: str, policy: OutboundPolicy) -> None:
    """The whole check; `_Unresolved` is left to the caller (a refusal or a connect error)."""
    try:
        scheme, host, shown, port = _shape(url)
    except _NotAURL as refused:
        raise await _explain_unparsable(url, refused) from None
    if policy.allows_name(host, port):
        return
    if scheme == "http" and all(p != port for _, p in policy.allowed_private):
        raise _plain_http(url)
    if _is_loopback_name(host):
        # Refused by name whatever it resolves to, unless to addresses allowed on this port.
        try:
            addresses = await _resolve(host, port)
        except _Unresolved:
            addresses = []
        if not addresses or not all(policy.allows_address(a, port) for a in addresses):
            raise OutboundURLRefused(url, f"{shown} names this machine (loopback); {_PUBLIC_ONLY}")
        return
    addresses = await _resolve(host, port)
    # Any one non-public address is enough to refuse: which one a connection gets is not ours.
    for address in addresses:
        kind = non_public_kind(address)
        if kind is not None and not policy.allows_address(address, port):
            raise _refusal_for(url, shown, address, kind)
    if scheme == "http" and not all(policy.allows_address(a, port) for a in addresses):
        raise _plain_http(url)


async def check_outbound_url(url: str, policy: OutboundPolicy) -> None:
    """Refuse (OutboundURLRefused) a URL an organization may not configure; return if it may."""
    try:
        await _check(url, policy)
    except _Unresolved as error:
        try:
            shown = httpx.URL(url).host
        except httpx.InvalidURL:
            shown = urlsplit(url).hostname or url
        raise OutboundURLRefused(
            url, f"{shown} does not resolve to any address ({error}); check the host name"
        ) from None


def refuse_redirect(response: httpx.Response) -> None:
    """Raise OutboundURLRefused for a 3xx answer: redirects are never followed (nor trusted)."""
    if 300 <= response.status_code < 400:
        location = _UNPRINTABLE.sub("?", response.headers.get("location", ""))[:200]
        where = f" to {location}" if location else ""
        raise OutboundURLRefused(
            str(response.request.url),
            f"answered {response.status_code} with a redirect{where}; Blocks does not follow "
            "redirects, configure the final URL instead",
        )


class _GuardedClient(httpx.AsyncClient):
    """An AsyncClient that checks each URL before sending and never follows a redirect."""

    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._outbound_policy = policy

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: _Auth | UseClientDefault | None = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        url = str(request.url)
        # httpx-secure alone would open a bare TCP probe to a hostname's first address before
        # judging it (a handshake with 127.0.0.1 for `localhost`); resolving and judging every
        # address first means a non-public host sees no connection at all.
        try:
            await _check(url, self._outbound_policy)
        except _Unresolved as error:
            raise httpx.ConnectError(f"{request.url.host}: {error}", request=request) from None
        try:
            # Redirects are refused whatever a caller asks: a hop is a URL nobody checked.
            return await super().send(request, stream=stream, auth=auth, follow_redirects=False)
        except SSRFProtectionError as error:
            # The name now resolves elsewhere than when checked above (DNS rebinding).
            shown = error.hostname
            if error.ip_addr is None:
                raise OutboundURLRefused(url, f"{shown}: {error}") from error
            kind = non_public_kind(error.ip_addr) or "not an allowed address"
            raise _refusal_for(url, shown, error.ip_addr, kind) from error


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (its CA bundle), built once per process: loading the bundle
    costs ~45 ms of CPU on the event loop, which a client per call would pay every time."""
    return httpx.create_ssl_context()


def guarded_client(policy: OutboundPolicy, *, timeout: httpx.Timeout | float) -> httpx.AsyncClient:
    """An AsyncClient for organization-configured URLs: checked, pinned, no redirects.

    A refused URL raises OutboundURLRefused from `send` (and so from `get`, `post`, ...); a host
    that does not resolve raises httpx.ConnectError, which is worth retrying. Proxies from the
    environment and .netrc credentials are ignored (trust_env=False): a proxy would connect on
    our behalf to addresses never checked, and netrc would hand credentials to foreign hosts.
    """
    client = _GuardedClient(
        policy,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        verify=_tls_context(),
    )
    # The global check is ours (stricter than 3.11's is_global), so httpx-secure's is off and
    # our validator decides: public, or an allowed pair by name or by address.
    return httpx_ssrf_protection(
        client, check_globally_reachable=False, custom_validator=policy.admits
    )

"""How OpenID Connect sign-in talks to a provider: its errors, the guarded client, answers read
within a size cap, and a few minutes' memory of what a provider published."""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

import httpx

from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    OutboundURLRefused,
    guarded_client,
    refuse_redirect,
)

_TIMEOUT = httpx.Timeout(10.0)
_CACHE_SECONDS = 300.0
_CACHE_ENTRIES = 256


class OidcError(Exception):
    """The provider's answer is refused; `reason` says why in a sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OidcUnreachable(OidcError):
    """The provider did not answer (down, timed out, failing): worth trying again later."""


T = TypeVar("T")


class Recent(Generic[T]):
    """A few minutes' memory of values by key, bounded (the oldest entry goes first)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, T]] = {}

    def get(self, key: str) -> T | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, value: T) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= _CACHE_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (time.monotonic() + _CACHE_SECONDS, value)


# Discovery documents, key sets, token and userinfo answers are small; a megabyte is plenty.
_MAX_ANSWER_BYTES = 1_000_000


def oidc_http(policy: OutboundPolicy) -> httpx.AsyncClient:
    """The client a sign-in calls its provider with (checked addresses, no redirects)."""
    return guarded_client(policy, timeout=_TIMEOUT)


async def read_capped(http: httpx.AsyncClient, what: str, request: httpx.Request) -> httpx.Response:
    """The provider's answer, read whole but never past `_MAX_ANSWER_BYTES` (a provider is the
    organization's to configure, so what it sends is not trusted with the process's memory)."""
    response = await http.send(request, stream=True)
    try:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _MAX_ANSWER_BYTES:
                raise OidcError(
                    f"the provider's {what} answered more than {_MAX_ANSWER_BYTES} bytes"
                )
    finally:
        await response.aclose()
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(body), request=request
    )


async def call(http: httpx.AsyncClient, what: str, request: httpx.Request) -> httpx.Response:
    try:
        response = await read_capped(http, what, request)
    except OutboundURLRefused as refused:
        raise OidcError(
            f"the provider's {what} {refused.url} is refused: {refused.reason}"
        ) from None
    except httpx.TransportError as error:
        raise OidcUnreachable(
            f"the provider's {what} did not answer ({type(error).__name__})"
        ) from None
    if response.status_code >= 500:
        raise OidcUnreachable(f"the provider's {what} answered HTTP {response.status_code}")
    try:
        refuse_redirect(response)
    except OutboundURLRefused as refused:
        raise OidcError(f"the provider's {what} {refused.reason}") from None
    return response


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OidcError(f"the provider's {what} answered HTTP {response.status_code}, not JSON")
    return body


async def get_json(http: httpx.AsyncClient, url: str, what: str) -> dict[str, Any]:
    response = await call(http, what, http.build_request("GET", url))
    if response.status_code != 200:
        raise OidcError(f"the provider's {what} answered HTTP {response.status_code}")
    return json_object(response, what)

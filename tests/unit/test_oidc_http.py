"""A provider's answers are read within a size cap: what an organization's provider sends is not
trusted with the process's memory."""

from __future__ import annotations

import httpx
import pytest

from blocks.infra.identity import oidc_http
from blocks.infra.identity.oidc_http import OidcError, get_json


def _serving(body: bytes) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_an_answer_within_the_cap_is_read() -> None:
    async with _serving(b'{"issuer": "https://idp.example.com"}') as http:
        document = await get_json(http, "https://idp.example.com/x", "discovery document")
    assert document == {"issuer": "https://idp.example.com"}


async def test_an_answer_past_the_cap_is_refused_not_read_whole() -> None:
    oversized = b'{"pad": "' + b"x" * (oidc_http._MAX_ANSWER_BYTES + 1) + b'"}'
    async with _serving(oversized) as http:
        with pytest.raises(OidcError, match="answered more than"):
            await get_json(http, "https://idp.example.com/x", "discovery document")

"""The save-time SSRF check: every spelling of a non-public address is refused with a reason.

Names resolve through this machine's real resolver (getaddrinfo), which also reads the odd IPv4
spellings (2130706433, 0x7f.1, 127.1) the way a connection would.
"""

from __future__ import annotations

import os
import socket
from ipaddress import ip_address

import httpx
import pytest

from blocks.infra.integrations.outbound_addresses import non_public_kind
from blocks.infra.integrations.outbound_http import (
    OutboundPolicy,
    OutboundURLRefused,
    check_outbound_url,
    refuse_redirect,
)
from blocks.infra.settings import Settings

PUBLIC_ONLY = OutboundPolicy()
LOOPBACK = "loopback"
PRIVATE = "a private address"
METADATA = "169.254.169.254, a link-local address"
UNSPECIFIED = "0.0.0.0"  # noqa: S104 - an address under test, not a bind address

# (URL, words the reason must contain): each says what was wrong with that URL.
REFUSED: list[tuple[str, tuple[str, ...]]] = [
    # IPv4 loopback, spelt every way getaddrinfo (inet_aton) reads.
    ("https://127.0.0.1/", ("127.0.0.1", LOOPBACK)),
    ("https://127.0.0.2:8443/v1", ("127.0.0.2", LOOPBACK)),
    ("https://2130706433/", ("2130706433", "127.0.0.1", LOOPBACK)),
    ("https://0177.0.0.1/", ("0177.0.0.1", "127.0.0.1", LOOPBACK)),
    ("https://017700000001/", ("017700000001", "127.0.0.1", LOOPBACK)),
    ("https://0x7f000001/", ("0x7f000001", "127.0.0.1", LOOPBACK)),
    ("https://0x7f.1/", ("0x7f.1", "127.0.0.1", LOOPBACK)),
    ("https://0x7f.0x0.0x0.0x1/", ("127.0.0.1", LOOPBACK)),
    ("https://127.1/", ("127.1", "127.0.0.1", LOOPBACK)),
    ("https://127.0.1/", ("127.0.1", "127.0.0.1", LOOPBACK)),
    ("https://127.000.000.001/", ("127.0.0.1", LOOPBACK)),
    (f"https://{UNSPECIFIED}/", (UNSPECIFIED, "unspecified")),
    ("https://0/", (UNSPECIFIED, "unspecified")),
    ("https://0.1.2.3/", ("0.1.2.3", "this network")),
    # Private, shared, link-local (cloud metadata), multicast, broadcast, reserved.
    ("https://10.0.0.1/", ("10.0.0.1", PRIVATE)),
    ("https://10.255.255.254/", ("10.255.255.254", PRIVATE)),
    ("https://172.16.0.1/", ("172.16.0.1", PRIVATE)),
    ("https://172.31.255.254/", ("172.31.255.254", PRIVATE)),
    ("https://192.168.0.1/", ("192.168.0.1", PRIVATE)),
    ("https://0xc0a80001/", ("192.168.0.1", PRIVATE)),
    ("https://169.254.169.254/latest/meta-data/", ("169.254.169.254 is a link-local",)),
    ("https://2852039166/", ("2852039166", METADATA)),
    ("https://0xa9fea9fe/", ("0xa9fea9fe", METADATA)),
    ("https://0251.0376.0251.0376/", (METADATA,)),
    ("https://169.254.43518/", (METADATA,)),
    ("https://100.64.0.1/", ("100.64.0.1", "carrier-grade NAT")),
    ("https://100.127.255.254/", ("100.127.255.254", "carrier-grade NAT")),
    ("https://224.0.0.1/", ("224.0.0.1", "multicast")),
    ("https://239.255.255.250/", ("239.255.255.250", "multicast")),
    ("https://255.255.255.255/", ("255.255.255.255", "broadcast")),
    ("https://4294967295/", ("255.255.255.255", "broadcast")),
    ("https://240.0.0.1/", ("240.0.0.1", "reserved")),
    ("https://192.0.2.1/", ("192.0.2.1", "not publicly reachable")),
    # IPv6, and IPv6 forms that carry an IPv4 address.
    ("https://[::1]/", ("::1", LOOPBACK)),
    ("https://[0:0:0:0:0:0:0:1]/", ("0:0:0:0:0:0:0:1", LOOPBACK)),
    ("https://[::]/", ("::", "unspecified")),
    ("https://[::ffff:127.0.0.1]/", ("IPv4-mapped", "127.0.0.1", LOOPBACK)),
    ("https://[0:0:0:0:0:ffff:7f00:1]/", ("IPv4-mapped", "127.0.0.1", LOOPBACK)),
    ("https://[::ffff:7f00:1]/", ("IPv4-mapped", "127.0.0.1", LOOPBACK)),
    ("https://[::ffff:169.254.169.254]/", ("IPv4-mapped", METADATA)),
    ("https://[::ffff:10.0.0.1]/", ("IPv4-mapped", "10.0.0.1", PRIVATE)),
    ("https://[::ffff:0:7f00:1]/", ("IPv4-translated", "127.0.0.1", LOOPBACK)),
    ("https://[::127.0.0.1]/", ("IPv4-compatible", "127.0.0.1", LOOPBACK)),
    ("https://[2002:7f00:1::]/", ("6to4", "127.0.0.1", LOOPBACK)),
    ("https://[2002:a9fe:a9fe::1]/", ("6to4", METADATA)),
    ("https://[64:ff9b::7f00:1]/", ("NAT64", "127.0.0.1", LOOPBACK)),
    ("https://[64:ff9b::a9fe:a9fe]/", ("NAT64", METADATA)),
    ("https://[64:ff9b:1::a00:1]/", ("local-use NAT64",)),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", ("Teredo",)),
    ("https://[fe80::1]/", ("fe80::1", "link-local")),
    ("https://[fe80::1%25eth0]/", ("link-local",)),
    ("https://[fec0::1]/", ("fec0::1", "site-local")),
    ("https://[fc00::1]/", ("fc00::1", "unique-local")),
    ("https://[fd00::1]/", ("fd00::1", "unique-local")),
    ("https://[ff02::1]/", ("ff02::1", "multicast")),
    ("https://[2001:db8::1]/", ("2001:db8::1", "not publicly reachable")),
    # Names of this machine.
    ("https://localhost/", ("localhost", LOOPBACK)),
    ("https://LOCALHOST./", ("localhost.", LOOPBACK)),
    ("https://LocalHost:8443/v1", ("localhost", LOOPBACK)),
    ("https://localhost.localdomain/", ("localhost.localdomain", LOOPBACK)),
    ("https://api.localhost/", ("api.localhost", LOOPBACK)),
    # Tricks with the URL itself.
    ("https://evil@127.0.0.1/", ("user name or password",)),
    ("https://user:secret@example.com/", ("user name or password",)),
    ("https://127.0.0.1#@example.com", ("127.0.0.1", LOOPBACK)),
    ("https://127.0.0.1?@example.com/", ("127.0.0.1", LOOPBACK)),
    ("http://8.8.8.8/", ("plain http://",)),
    ("http://example.com/v1", ("plain http://",)),
    ("file:///etc/passwd", ("file://",)),
    ("ftp://8.8.8.8/", ("ftp://",)),
    ("gopher://8.8.8.8:70/", ("gopher://",)),
    ("javascript://8.8.8.8/%0aalert(1)", ("javascript://",)),
    ("8.8.8.8/v1", ("no scheme",)),
    ("https:///v1", ("no host",)),
    ("https://:443/", ("no host",)),
    ("https://8.8.8.8:0/", ("port 0",)),
    ("https://8.8.8.8:65536/", ("port 65536",)),
    ("https://1.1.1.1.1/", ("1.1.1.1.1", "does not resolve")),
    ("https://no-such-host.invalid/", ("no-such-host.invalid", "does not resolve")),
    ("https://example.com/" + "a" * 2100, ("longer than 2048",)),
]


@pytest.mark.parametrize(("url", "words"), REFUSED, ids=[u[:60] for u, _ in REFUSED])
async def test_refused_with_a_reason_that_names_what_is_wrong(
    url: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(OutboundURLRefused) as refused:
        await check_outbound_url(url, PUBLIC_ONLY)
    for word in words:
        assert word in refused.value.reason, refused.value.reason
    assert str(refused.value) == refused.value.reason


def test_the_list_is_long_enough() -> None:
    assert len([u for u, words in REFUSED if "does not resolve" not in words]) >= 40


async def test_a_hostname_that_resolves_to_loopback_is_refused() -> None:
    # This machine's own name: a name that is not `localhost` yet resolves to a loopback address.
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 443)}
    except OSError:
        pytest.skip(f"{name} does not resolve here")
    kinds = [non_public_kind(ip_address(a)) for a in addresses]
    if not any(kinds):
        pytest.skip(f"{name} resolves to public addresses here")
    with pytest.raises(OutboundURLRefused) as refused:
        await check_outbound_url(f"https://{name}/v1", PUBLIC_ONLY)
    assert f"{name} resolves to" in refused.value.reason


async def test_public_addresses_pass() -> None:
    # IP literals only: they need no DNS, which this machine may not have.
    for url in (
        "https://8.8.8.8/v1",
        "https://1.1.1.1:8443/",
        "https://[2606:4700:4700::1111]/v1",
        "https://[::ffff:8.8.8.8]/",
        "https://[64:ff9b::808:808]/",
    ):
        await check_outbound_url(url, PUBLIC_ONLY)


async def test_credentials_are_not_repeated_in_the_refusal() -> None:
    with pytest.raises(OutboundURLRefused) as refused:
        await check_outbound_url("https://user:hunter2@127.0.0.1/", PUBLIC_ONLY)
    assert "hunter2" not in refused.value.url
    assert refused.value.url == "https://***@127.0.0.1/"


async def test_an_allowed_pair_passes_and_the_same_host_on_another_port_does_not() -> None:
    policy = OutboundPolicy(frozenset({("127.0.0.1", 8080), ("LocalHost", 8443)}))
    await check_outbound_url("http://127.0.0.1:8080/v1", policy)
    await check_outbound_url("https://127.0.0.1:8080/v1", policy)
    # An allowed IP literal admits other spellings of that address (it is the same place).
    await check_outbound_url("http://2130706433:8080/", policy)
    await check_outbound_url("https://LOCALHOST:8443/", policy)
    for url in (
        "http://127.0.0.1:8081/",
        "https://127.0.0.1/",
        "https://127.0.0.2:8080/",
        "https://10.0.0.1:8080/",
        "https://localhost:8444/",
        "http://[::1]:8080/",
    ):
        with pytest.raises(OutboundURLRefused):
            await check_outbound_url(url, policy)


async def test_the_policy_reads_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BLOCKS_")]:
        monkeypatch.delenv(name)
    assert OutboundPolicy.from_settings(Settings()).allowed_private == frozenset()
    monkeypatch.setenv(
        "BLOCKS_OUTBOUND_ALLOW_PRIVATE", " Ollama.Internal.:11434, 127.0.0.1:8080,[::1]:9000 ,"
    )
    policy = OutboundPolicy.from_settings(Settings())
    assert policy.allowed_private == frozenset(
        {("ollama.internal", 11434), ("127.0.0.1", 8080), ("::1", 9000)}
    )
    await check_outbound_url("http://[::1]:9000/", policy)
    await check_outbound_url("http://[0:0:0:0:0:0:0:1]:9000/", policy)


@pytest.mark.parametrize(
    "text",
    [
        "localhost",
        "localhost:",
        "localhost:http",
        "localhost:0",
        "localhost:65536",
        ":8080",
        "::1:8080",
        "[localhost]:8080",
        "http://localhost:8080",
        "user@localhost:8080",
        "localhost:8080/v1",
    ],
)
def test_a_malformed_setting_is_refused_at_start_up(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("BLOCKS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BLOCKS_OUTBOUND_ALLOW_PRIVATE", f"127.0.0.1:8080,{text}")
    with pytest.raises(ValueError, match=r"BLOCKS_OUTBOUND_ALLOW_PRIVATE: .* is not host:port"):
        OutboundPolicy.from_settings(Settings())


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308, 300, 304])
def test_a_redirect_is_refused(status: int) -> None:
    request = httpx.Request("GET", "https://api.example.com/v1/models")
    location = "http://169.254.169.254/latest/meta-data/\r\nX: y"
    response = httpx.Response(status, headers={"location": location}, request=request)
    with pytest.raises(OutboundURLRefused) as refused:
        refuse_redirect(response)
    assert f"answered {status} with a redirect" in refused.value.reason
    assert "\r" not in refused.value.reason
    assert refused.value.url == "https://api.example.com/v1/models"


def test_other_answers_are_not_redirects() -> None:
    request = httpx.Request("GET", "https://api.example.com/v1/models")
    for status in (200, 204, 400, 401, 404, 429, 500):
        refuse_redirect(httpx.Response(status, request=request))

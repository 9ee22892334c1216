"""DNS TXT lookups for domain verification, through dnspython's async resolver.

A domain is proved by a TXT record at `_blocks-challenge.<domain>` (a name of its own, so the
apex's TXT records, SPF among them, stay as they are). The resolver is the system's, or the one
`BLOCKS_DNS_RESOLVER` names (`host:port`, `[::1]:53` for IPv6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dns.exception
import dns.rrset

from blocks.infra.lazy_modules import lazy_module

if TYPE_CHECKING:
    import dns.asyncresolver

# dnspython's resolver is about 18 MB (it loads its DNS-over-HTTPS and QUIC support): loaded by
# the first domain verification, not by every API process at start.
dns_resolver = lazy_module("dns.resolver")
dns_asyncresolver = lazy_module("dns.asyncresolver")

CHALLENGE_LABEL = "_blocks-challenge"
# The whole lookup, retries included: an admin waits for it.
_LIFETIME_SECONDS = 8.0


class DnsUnavailable(Exception):
    """No resolver answered (timed out, refused, or each answered SERVFAIL)."""


def challenge_name(domain: str) -> str:
    """Where the verification TXT record of `domain` lives."""
    return f"{CHALLENGE_LABEL}.{domain}"


def parse_resolver(spec: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`, or a bare host: port 53) -> (host, port); ValueError if not."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif spec.count(":") == 1:
        host, _, port = spec.partition(":")
    else:
        host, port = spec, "53"
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{spec!r} is not host:port")
    return host, int(port)


def _resolver(resolver_spec: str | None) -> dns.asyncresolver.Resolver:
    if resolver_spec is None:
        resolver = dns_asyncresolver.Resolver()
    else:
        host, port = parse_resolver(resolver_spec)
        resolver = dns_asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = _LIFETIME_SECONDS
    # No cache: an admin who just added the record must see it on the next try.
    resolver.cache = None
    return resolver


async def txt_records(name: str, resolver_spec: str | None = None) -> list[str]:
    """The TXT values at `name` (each record's strings joined); [] when the name or the record
    does not exist. DnsUnavailable when no resolver gives an answer."""
    try:
        resolver = _resolver(resolver_spec)
    except ValueError as error:  # a misconfigured BLOCKS_DNS_RESOLVER: no resolver to ask
        raise DnsUnavailable(f"BLOCKS_DNS_RESOLVER: {error}") from error
    try:
        answer = await resolver.resolve(name, "TXT", search=False)
    except (dns_resolver.NXDOMAIN, dns_resolver.NoAnswer):
        return []
    except (dns_resolver.NoNameservers, dns.exception.Timeout, OSError) as error:
        raise DnsUnavailable(str(error) or type(error).__name__) from error
    rrset: dns.rrset.RRset | None = answer.rrset
    if rrset is None:
        return []
    values = []
    for rdata in rrset:
        strings: tuple[bytes, ...] = rdata.strings  # type: ignore[attr-defined]
        values.append(b"".join(strings).decode("utf-8", "replace"))
    return values

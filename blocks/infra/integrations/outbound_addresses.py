"""Which addresses an organization's outbound URLs may reach: public ones, and pairs an admin allows.

Python 3.11's `is_global` alone is too lax for this (it calls 224.0.0.1, fec0::1, ::7f00:1 and
2002:7f00:1:: global), so each special range is named here, and IPv6 forms that carry an IPv4
address (mapped, compatible, translated, 6to4, NAT64) are judged by the address they carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blocks.infra.settings import Settings

IPAddress = IPv4Address | IPv6Address

# Checked in order; the first range that holds the address names what it is.
_IPV4_RANGES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), kind)
    for net, kind in (
        ("0.0.0.0/32", "the unspecified address"),
        ("0.0.0.0/8", "a 'this network' address"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("169.254.0.0/16", "a link-local address (where cloud metadata services answer)"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)
_IPV6_RANGES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), kind)
    for net, kind in (
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("::/8", "a reserved IPv6 address (::/8)"),
        ("2001::/32", "a Teredo tunnel address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("fc00::/7", "a unique-local (private) address"),
        ("ff00::/8", "a multicast address"),
    )
)
_UNSPECIFIED_V6 = IPv6Address("::")
_LOOPBACK_V6 = IPv6Address("::1")
_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 form carries, and the form's name, if it carries one."""
    last_32 = IPv4Address(address.packed[-4:])
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped form", address.ipv4_mapped
    if address in _IPV4_TRANSLATED:
        return "an IPv4-translated form", last_32
    if address in _IPV4_COMPATIBLE:
        return "an IPv4-compatible form", last_32
    if address in _NAT64:
        return "a NAT64 form", last_32
    if address.sixtofour is not None:
        return "a 6to4 form", address.sixtofour
    return None


def non_public_kind(address: IPAddress) -> str | None:
    """What makes `address` not publicly reachable ("a loopback address", ...), or None if public."""
    if isinstance(address, IPv4Address):
        for network, kind in _IPV4_RANGES:
            if address in network:
                return kind
        return None if address.is_global else "a special-purpose address, not publicly reachable"
    address = IPv6Address(address.packed)  # without a zone (%eth0), which changes nothing here
    # Before the IPv4-compatible forms (::/96), which both of these would otherwise look like.
    if address == _UNSPECIFIED_V6:
        return "the unspecified address"
    if address == _LOOPBACK_V6:
        return "a loopback address"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form, ipv4 = embedded
        inner = non_public_kind(ipv4)
        if inner is not None:
            return f"{form} of {ipv4}, {inner}"
        if address in _IPV4_MAPPED or address in _NAT64 or address.sixtofour is not None:
            return None  # these reach the public IPv4 address they carry
    for network, kind in _IPV6_RANGES:
        if address in network:
            return kind
    return None if address.is_global else "a special-purpose address, not publicly reachable"


def normalize_host(host: str) -> str:
    """A host as pairs are compared: lower case, no trailing dot, IP literals in canonical form."""
    host = host.strip().lower().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ip_address(host))
    except ValueError:
        return host


def parse_allowed_pairs(text: str | None) -> frozenset[tuple[str, int]]:
    """`host:port,[::1]:port` into (host, port) pairs; ValueError naming a malformed entry."""
    pairs: set[tuple[str, int]] = set()
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, sep, port_text = entry.rpartition(":")
        bare = host.removeprefix("[").removesuffix("]")
        if (
            not sep
            or not host
            or not port_text.isdigit()
            or not 1 <= int(port_text) <= 65535
            or any(c in host for c in "/@?#% ")
            # An IPv6 host needs brackets, or `::1:8080` would be ambiguous.
            or (":" in bare and not (host.startswith("[") and host.endswith("]")))
            or (host.startswith("[") and ":" not in bare)
        ):
            raise ValueError(
                f"BLOCKS_OUTBOUND_ALLOW_PRIVATE: {entry!r} is not host:port "
                "(comma-separated, e.g. ollama.internal:11434,127.0.0.1:8080,[::1]:8080)"
            )
        pairs.add((normalize_host(bare), int(port_text)))
    return frozenset(pairs)


@dataclass(frozen=True)
class OutboundPolicy:
    """Exact (host, port) pairs an admin allows although they are not public; all else is public only."""

    allowed_private: frozenset[tuple[str, int]] = frozenset()

    def __post_init__(self) -> None:
        # Normalized once, so `allows` compares like with like however the pairs were given.
        pairs = frozenset((normalize_host(h), p) for h, p in self.allowed_private)
        object.__setattr__(self, "allowed_private", pairs)

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        """The policy from BLOCKS_OUTBOUND_ALLOW_PRIVATE; ValueError (at start-up) if malformed."""
        return cls(parse_allowed_pairs(settings.outbound_allow_private))

    def allows_name(self, host: str, port: int) -> bool:
        return (normalize_host(host), port) in self.allowed_private

    def allows_address(self, address: IPAddress, port: int) -> bool:
        return (normalize_host(str(address).split("%")[0]), port) in self.allowed_private

    def admits(self, host: str, address: IPAddress, port: int) -> bool:
        """What may be connected to: a public address, or an allowed pair by name or address."""
        return (
            non_public_kind(address) is None
            or self.allows_name(host, port)
            or self.allows_address(address, port)
        )

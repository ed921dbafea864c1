"""The SSRF guard's rules: which image URLs, hosts, ports and addresses may be fetched (no I/O).

Reviewed as one component (docs/operations.md, "Images by URL"). `dupify.images.fetch` asks it
twice per hop: `check_url` before anything is resolved, `check_destination` once the host's
addresses are known and before any connection is made. Every refusal names its rule, so an
operator can see why a URL was refused and which allow-list entry would let it through.

Why refuse by address and not by host name: a name can resolve anywhere (an attacker's DNS can
answer 127.0.0.1 or the cloud metadata address), so the addresses that will be dialled are what
is judged, and the fetcher dials exactly those (no second lookup: DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit

from dupify.config import ImageUrlSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_CHARS = 2048
# Instance metadata services (AWS, GCP, Azure, OpenStack; ECS task credentials; Alibaba; Oracle;
# AWS over IPv6): named as their own rule because they are the classic SSRF prize.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
    )
)
# Refused ranges, first match names the rule. Anything else that is not globally routable
# (documentation, benchmarking, 240/4, site-local IPv6, ...) is refused as "reserved" below.
_RANGES: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = tuple(
    (rule, tuple(ipaddress.ip_network(net) for net in nets))
    for rule, nets in (
        ("unspecified", ("0.0.0.0/8", "::/128")),
        ("loopback", ("127.0.0.0/8", "::1/128")),
        ("link_local", ("169.254.0.0/16", "fe80::/10")),
        ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
        ("cgnat", ("100.64.0.0/10",)),
        ("multicast", ("224.0.0.0/4", "ff00::/8")),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@dataclass(frozen=True)
class Refusal:
    """Why a URL may not be fetched: `code` is the public error code, `rule` the guard's rule."""

    code: str  # "url_forbidden" or "invalid_request"
    rule: str
    reason: str


@dataclass(frozen=True)
class Target:
    """One checked hop: what to connect to and what to ask for."""

    scheme: str
    host: str  # lower-case ASCII (IDNA) name, or an address literal without brackets
    port: int
    target: str  # path and query, as sent on the request line
    literal: IPAddress | None  # the host, when it is an address literal

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo), which
    is where a connection to it really goes on many networks."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address, where the tunnel delivers
    value = int(address)
    if value >> 32 == 0 and value > 1:  # ::a.b.c.d, IPv4-compatible (deprecated, still routed)
        return ipaddress.IPv4Address(value)
    if address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def address_rule(address: IPAddress) -> str | None:
    """The rule that refuses `address`, or None for a globally routable one."""
    if address in METADATA_ADDRESSES:
        return "metadata"
    inner = embedded_ipv4(address)
    if inner is not None:
        rule = address_rule(inner)
        return f"{rule}_embedded_in_ipv6" if rule else None
    for rule, networks in _RANGES:
        if any(address in network for network in networks):
            return rule
    return None if address.is_global else "reserved"


class HostRules:
    """An operator's list of hosts (`images.internal`), wildcards (`*.cdn.internal`: any
    subdomain, not the apex) and CIDRs or single addresses (`10.20.0.0/16`, `::1`)."""

    def __init__(self, entries: Iterable[str], setting: str) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                self.suffixes.append("." + _idna(entry[2:], setting, raw))
            else:
                self.names.add(_idna(entry, setting, raw))

    def names_host(self, host: str) -> bool:
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def holds_address(self, address: IPAddress) -> bool:
        candidates = [address]
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
        return any(
            candidate in network
            for candidate in candidates
            for network in self.networks
            if candidate.version == network.version
        )


def _idna(name: str, setting: str, raw: str) -> str:
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{setting}: {raw!r} is neither a host name nor a CIDR") from exc
    if not all(_HOST_LABEL.match(label) for label in ascii_name.split(".")):
        raise ValueError(f"{setting}: {raw!r} is neither a host name nor a CIDR")
    return ascii_name


class UrlGuard:
    """The guard for one deployment's settings (DUPIFY_IMAGE_URLS__*)."""

    def __init__(self, settings: ImageUrlSettings) -> None:
        self.settings = settings
        self.allow = HostRules(settings.allow, "DUPIFY_IMAGE_URLS__ALLOW")
        self.deny = HostRules(settings.deny, "DUPIFY_IMAGE_URLS__DENY")

    def check_url(self, url: str) -> Target | Refusal:
        """The URL's scheme, user-info, host and port, before any lookup."""
        if len(url) > MAX_URL_CHARS:
            return Refusal(
                "invalid_request", "malformed", f"the URL is longer than {MAX_URL_CHARS} characters"
            )
        if _FORBIDDEN_CHARS.search(url):
            return Refusal(
                "invalid_request",
                "malformed",
                "the URL contains spaces, backslashes or control characters",
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return Refusal("invalid_request", "malformed", "the URL is not valid")
        scheme = parts.scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.settings.allow_http):
            return Refusal(
                "url_forbidden", "scheme", f"{scheme or 'scheme-less'} URLs are not fetched here"
            )
        if "@" in parts.netloc:
            return Refusal(
                "url_forbidden", "userinfo", "URLs carrying user:password@ are not fetched"
            )
        host = _host_of(parts)
        if host is None:
            return Refusal("invalid_request", "malformed", "the URL has no valid host name")
        if self.deny.names_host(host):
            return Refusal("url_forbidden", "deny", "the URL's host is on the operator's deny list")
        literal = _address_literal(host)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        # Non-ASCII in the path or query goes on the wire percent-encoded as UTF-8, as browsers
        # send it; what is already ASCII (existing %XX escapes included) is left exactly as given.
        target = _NON_ASCII.sub(lambda m: quote(m.group(0), safe=""), target)
        default_port = 443 if scheme == "https" else 80
        return Target(scheme, host, port or default_port, target, literal)

    def check_destination(self, target: Target, addresses: Sequence[IPAddress]) -> Refusal | None:
        """Every address the host resolved to, and the port, before any connection."""
        if not addresses:
            return Refusal("url_unreachable", "dns", "the URL's host has no address")
        if any(self.deny.holds_address(address) for address in addresses):
            return Refusal(
                "url_forbidden", "deny", "the URL's host resolves to an address on the deny list"
            )
        named = self.allow.names_host(target.host)
        for address in addresses:
            if named or self.allow.holds_address(address):
                continue
            rule = address_rule(address)
            if rule is not None:
                what = rule.replace("_", " ")
                return Refusal(
                    "url_forbidden", rule, f"the URL's host resolves to a {what} address"
                )
        trusted = named or all(self.allow.holds_address(address) for address in addresses)
        if not trusted and target.port not in self.settings.ports:
            return Refusal(
                "url_forbidden", "port", f"port {target.port} is not one this server fetches from"
            )
        return None


def _host_of(parts: SplitResult) -> str | None:
    """The URL's host as lower-case ASCII: IDNA for names, brackets dropped for IPv6."""
    host = parts.hostname
    if not host:
        return None
    if _address_literal(host) is not None:
        return host
    host = host.rstrip(".")
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    return ascii_host if all(_HOST_LABEL.match(label) for label in labels) else None


def _address_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None

"""The SSRF guard's rules (dupify.images.urlguard): every refused address class, embedded IPv4 in
IPv6, the allow and deny lists, ports, schemes and user-info; no I/O."""

from __future__ import annotations

import ipaddress

import pytest

from dupify.config import ImageUrlSettings
from dupify.images.urlguard import Refusal, Target, UrlGuard, address_rule

REFUSED = {
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "10.0.0.1": "private",
    "172.16.5.4": "private",
    "192.168.1.1": "private",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "169.254.1.1": "link_local",
    "fe80::1": "link_local",
    "100.64.0.1": "cgnat",
    "100.127.255.254": "cgnat",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "169.254.169.254": "metadata",
    "169.254.170.2": "metadata",
    "100.100.100.200": "metadata",
    "fd00:ec2::254": "metadata",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.1": "reserved",  # documentation
    "198.18.0.1": "reserved",  # benchmarking
    "2001:db8::1": "reserved",
    "::ffff:10.0.0.1": "private_embedded_in_ipv6",
    "::ffff:127.0.0.1": "loopback_embedded_in_ipv6",
    "::ffff:169.254.169.254": "metadata_embedded_in_ipv6",
    "::10.0.0.1": "private_embedded_in_ipv6",  # IPv4-compatible
    "64:ff9b::7f00:1": "loopback_embedded_in_ipv6",  # NAT64
    "2002:0a00:0001::1": "private_embedded_in_ipv6",  # 6to4 of 10.0.0.1
}


@pytest.mark.parametrize(("address", "rule"), sorted(REFUSED.items()))
def test_each_refused_class_is_named(address: str, rule: str) -> None:
    assert address_rule(ipaddress.ip_address(address)) == rule


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "1.1.1.1"])
def test_public_addresses_pass(address: str) -> None:
    assert address_rule(ipaddress.ip_address(address)) is None


def _target(guard: UrlGuard, url: str) -> Target:
    checked = guard.check_url(url)
    assert isinstance(checked, Target), checked
    return checked


def _addresses(*values: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(value) for value in values]


def test_every_resolved_address_is_checked() -> None:
    guard = UrlGuard(ImageUrlSettings())
    target = _target(guard, "https://images.example.com/a.jpg")
    assert guard.check_destination(target, _addresses("93.184.216.34")) is None
    refusal = guard.check_destination(target, _addresses("93.184.216.34", "10.1.2.3"))
    assert isinstance(refusal, Refusal) and refusal.rule == "private"


def test_allow_lets_named_hosts_and_cidrs_through_refused_ranges() -> None:
    guard = UrlGuard(
        ImageUrlSettings(allow=["images.internal", "*.cdn.internal", "10.20.0.0/16", "::1"])
    )
    for url, address in (
        ("https://images.internal/a.jpg", "10.9.9.9"),
        ("https://eu.cdn.internal/a.jpg", "192.168.0.7"),
        ("https://store.example/a.jpg", "10.20.3.4"),
        ("https://[::1]/a.jpg", "::1"),
    ):
        target = _target(guard, url)
        assert guard.check_destination(target, _addresses(address)) is None, url
    # The wildcard names subdomains, not the apex; a CIDR names only its range.
    for url, address in (
        ("https://cdn.internal/a.jpg", "10.0.0.1"),
        ("https://store.example/a.jpg", "10.21.0.1"),
    ):
        refusal = guard.check_destination(_target(guard, url), _addresses(address))
        assert isinstance(refusal, Refusal) and refusal.rule == "private", url


def test_an_allowed_destination_may_use_any_port_and_others_only_443_and_80() -> None:
    guard = UrlGuard(ImageUrlSettings(allow=["127.0.0.1"]))
    internal = _target(guard, "https://127.0.0.1:8443/a.jpg")
    assert guard.check_destination(internal, _addresses("127.0.0.1")) is None
    public = _target(guard, "https://images.example.com:8443/a.jpg")
    refusal = guard.check_destination(public, _addresses("93.184.216.34"))
    assert isinstance(refusal, Refusal) and refusal.rule == "port"
    assert (
        guard.check_destination(
            _target(guard, "https://images.example.com:443/a.jpg"), _addresses("93.184.216.34")
        )
        is None
    )


def test_deny_wins_over_allow() -> None:
    guard = UrlGuard(ImageUrlSettings(allow=["10.0.0.0/8"], deny=["10.0.0.9", "*.bad.example"]))
    refusal = guard.check_destination(
        _target(guard, "https://x.example/a.jpg"), _addresses("10.0.0.9")
    )
    assert isinstance(refusal, Refusal) and refusal.rule == "deny"
    named = guard.check_url("https://img.bad.example/a.jpg")
    assert isinstance(named, Refusal) and named.rule == "deny"


@pytest.mark.parametrize(
    ("url", "code", "rule"),
    [
        ("http://images.example.com/a.jpg", "url_forbidden", "scheme"),
        ("ftp://images.example.com/a.jpg", "url_forbidden", "scheme"),
        ("https://user:pw@images.example.com/a.jpg", "url_forbidden", "userinfo"),
        ("https://images.example.com@10.0.0.1/a.jpg", "url_forbidden", "userinfo"),
        ("https://images.example.com:99999/a.jpg", "invalid_request", "malformed"),
        ("https:///a.jpg", "invalid_request", "malformed"),
        ("https://exa mple.com/a.jpg", "invalid_request", "malformed"),
        ("https://example.com\\@10.0.0.1/", "invalid_request", "malformed"),
        ("https://" + "a" * 3000 + ".com/", "invalid_request", "malformed"),
    ],
)
def test_urls_refused_before_any_lookup(url: str, code: str, rule: str) -> None:
    refusal = UrlGuard(ImageUrlSettings()).check_url(url)
    assert isinstance(refusal, Refusal)
    assert (refusal.code, refusal.rule) == (code, rule)


def test_http_only_when_the_operator_allows_it() -> None:
    target = UrlGuard(ImageUrlSettings(allow_http=True)).check_url("http://images.example.com/x")
    assert isinstance(target, Target) and target.port == 80


def test_targets_keep_path_and_query_and_normalise_the_host() -> None:
    guard = UrlGuard(ImageUrlSettings())
    target = _target(guard, "https://IMAGES.Example.COM./p/a.jpg?sig=1#frag")
    assert (target.host, target.port, target.target) == (
        "images.example.com",
        443,
        "/p/a.jpg?sig=1",
    )
    assert target.authority == "images.example.com"
    idn = _target(guard, "https://bücher.example/a.jpg")
    assert idn.host == "xn--bcher-kva.example"
    literal = _target(guard, "https://[2606:4700::1111]:8443/a")
    assert literal.literal == ipaddress.ip_address("2606:4700::1111")
    assert literal.authority == "[2606:4700::1111]:8443"


def test_a_bad_allow_entry_fails_at_start_up_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="DUPIFY_IMAGE_URLS__ALLOW"):
        UrlGuard(ImageUrlSettings(allow=["not a host!"]))

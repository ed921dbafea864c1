"""The URL fetcher (dupify.images.fetch) against real HTTP(S) servers on 127.0.0.1: what it
fetches, what it refuses before dialling, redirects, DNS rebinding, time and byte caps, and its
concurrency limits. Test host names resolve through `FixedResolver`; `RecordingNetwork` dials
loopback only, so a refused address is never dialled even if the guard were broken."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from dupify.config import ImageUrlSettings
from dupify.errors import ApiError
from dupify.images.fetch import UrlFetcher
from support.image_server import FixedResolver, ImageServer, RecordingNetwork, Route, redirect
from support.samples import photo_jpeg

CAP = 256 * 1024
LOCAL = {"allow": ["127.0.0.1"], "allow_http": True}


def _fetcher(
    resolver: FixedResolver | None = None, ssl_context: ssl.SSLContext | None = None, **settings
) -> tuple[UrlFetcher, RecordingNetwork]:
    network = RecordingNetwork()
    fetcher = UrlFetcher(
        ImageUrlSettings(**settings),
        CAP,
        resolver=resolver or FixedResolver({}),
        network=network,
        ssl_context=ssl_context,
    )
    return fetcher, network


async def _one(fetcher: UrlFetcher, url: str) -> bytes | ApiError:
    (outcome,) = await fetcher.fetch_all([("input", url)])
    return outcome


def _error(outcome: bytes | ApiError, code: str) -> ApiError:
    assert isinstance(outcome, ApiError), "expected a refusal, got bytes"
    assert outcome.code == code, outcome.message
    assert outcome.param == "input" and outcome.message.startswith("input: ")
    return outcome


async def test_an_allowed_image_url_is_fetched_whole() -> None:
    jpeg = photo_jpeg("chelsea")
    async with ImageServer({"/cat.jpg": Route(body=jpeg)}) as server:
        fetcher, network = _fetcher(**LOCAL)
        assert await _one(fetcher, server.url("/cat.jpg")) == jpeg
    assert server.requests == [("/cat.jpg", f"127.0.0.1:{server.port}")]
    assert network.dials == [("127.0.0.1", server.port)] and not network.refused_dials


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.7.7", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("fe80::1", "link_local"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private_embedded_in_ipv6"),
        ("::ffff:127.0.0.1", "loopback_embedded_in_ipv6"),
    ],
)
async def test_each_forbidden_address_is_refused_before_any_connection(
    address: str, rule: str
) -> None:
    async with ImageServer({"/cat.jpg": Route(body=b"x")}) as server:
        resolver = FixedResolver({"images.test": [address]})
        fetcher, network = _fetcher(resolver, allow_http=True, ports=[server.port])
        by_name = _error(
            await _one(fetcher, server.url("/cat.jpg", "images.test")), "url_forbidden"
        )
        host = f"[{address}]" if ":" in address else address
        by_literal = _error(await _one(fetcher, server.url("/cat.jpg", host)), "url_forbidden")
    for refusal in (by_name, by_literal):
        assert f"(rule: {rule})" in refusal.message
        assert "images.test" not in refusal.message and "/cat.jpg" not in refusal.message
    assert server.requests == [] and network.dials == [] and network.refused_dials == []


async def test_a_redirect_to_a_forbidden_address_is_refused() -> None:
    async with ImageServer({}) as server:
        server.routes["/hop"] = redirect("http://169.254.169.254/latest/meta-data/")
        server.routes["/hop-by-name"] = redirect("/inner", 301)
        resolver = FixedResolver({"images.test": ["127.0.0.1"], "meta.test": ["10.0.0.1"]})
        fetcher, network = _fetcher(resolver, **LOCAL)
        refused = _error(await _one(fetcher, server.url("/hop")), "url_forbidden")
        assert "(rule: metadata)" in refused.message
        server.routes["/inner"] = redirect(f"http://meta.test:{server.port}/x", 307)
        refused = _error(await _one(fetcher, server.url("/hop-by-name")), "url_forbidden")
        assert "(rule: private)" in refused.message
    assert server.paths == ["/hop", "/hop-by-name", "/inner"]
    assert network.refused_dials == []


async def test_redirects_are_followed_at_most_max_redirects_times() -> None:
    jpeg = photo_jpeg("chelsea", size=(64, 48))
    routes = {f"/r{i}": redirect(f"/r{i + 1}") for i in range(4)}
    routes["/r4"] = Route(body=jpeg)
    async with ImageServer(routes) as server:
        fetcher, _ = _fetcher(**LOCAL)
        assert await _one(fetcher, server.url("/r1")) == jpeg  # three redirects: fine
        refused = _error(await _one(fetcher, server.url("/r0")), "url_forbidden")
        assert "(rule: max_redirects)" in refused.message
    assert server.paths.count("/r4") == 1 and server.paths.count("/r0") == 1


async def test_a_changed_dns_answer_cannot_move_the_connection() -> None:
    jpeg = photo_jpeg("chelsea", size=(64, 48))
    async with ImageServer({"/cat.jpg": Route(body=jpeg)}) as server:
        # First answer allowed (127.0.0.1 is on the allow list), any later one forbidden.
        resolver = FixedResolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
        fetcher, network = _fetcher(resolver, **LOCAL)
        assert await _one(fetcher, server.url("/cat.jpg", "rebind.test")) == jpeg
        assert resolver.lookups == ["rebind.test"]  # looked up once, connected to that answer
        assert network.dials == [("127.0.0.1", server.port)] and network.refused_dials == []
        # The other way round: a forbidden first answer is refused; no second lookup rescues it.
        resolver = FixedResolver({"rebind.test": [["10.0.0.1"], ["127.0.0.1"]]})
        fetcher, network = _fetcher(resolver, **LOCAL)
        _error(await _one(fetcher, server.url("/cat.jpg", "rebind.test")), "url_forbidden")
        assert resolver.lookups == ["rebind.test"] and network.dials == []
    assert server.paths == ["/cat.jpg"]


async def test_a_slow_server_hits_the_time_budget() -> None:
    async with ImageServer({"/slow.jpg": Route(body=b"x", delay_s=30)}) as server:
        fetcher, _ = _fetcher(**LOCAL, timeout_s=0.5)
        refused = _error(await _one(fetcher, server.url("/slow.jpg")), "url_timeout")
    assert "0.5 s" in refused.message


async def test_an_endless_body_stops_at_the_byte_cap_without_buffering_more() -> None:
    async with ImageServer({"/endless": Route(endless=True)}) as server:
        fetcher, network = _fetcher(**LOCAL)
        _error(await _one(fetcher, server.url("/endless")), "url_too_large")
        declared = Route(body=b"\0" * (CAP + 1))
        server.routes["/declared"] = declared
        read_before = network.bytes_read
        _error(await _one(fetcher, server.url("/declared")), "url_too_large")
    # What was read off the socket: the cap and at most one more read (64 KiB, headers in it);
    # for a declared length over the cap, the one read that brought the headers.
    assert read_before <= CAP + 65536
    assert network.bytes_read - read_before <= 65536


@pytest.mark.parametrize(
    ("route", "code", "text"),
    [
        (Route(status=404, body=b"gone", content_type="text/plain"), "url_bad_status", "HTTP 404"),
        (Route(status=500, body=b"oops", content_type="text/plain"), "url_bad_status", "HTTP 500"),
        (Route(body=b"<html>hi</html>", content_type="text/html"), "invalid_image", "web page"),
    ],
)
async def test_statuses_and_pages_say_what_happened(route: Route, code: str, text: str) -> None:
    async with ImageServer({"/x": route}) as server:
        fetcher, _ = _fetcher(**LOCAL)
        assert text in _error(await _one(fetcher, server.url("/x")), code).message
    assert fetcher.outcomes == {(code, ""): 1}


async def test_unreachable_and_unknown_hosts() -> None:
    async with ImageServer({}) as server:
        port = server.port
    fetcher, _ = _fetcher(FixedResolver({}), **LOCAL)
    assert (
        "refused"
        in _error(await _one(fetcher, f"http://127.0.0.1:{port}/x"), "url_unreachable").message
    )
    no_such = await _one(fetcher, "https://nowhere.test/x.jpg")
    assert "does not resolve" in _error(no_such, "url_unreachable").message


async def test_concurrency_is_limited_per_request_and_per_process() -> None:
    jpeg = photo_jpeg("chelsea", size=(64, 48))
    routes = {f"/{i}.jpg": Route(body=jpeg, delay_s=0.05) for i in range(32)}
    async with ImageServer(routes) as server:
        fetcher, _ = _fetcher(**LOCAL, per_request=4, per_process=6)
        urls = [(f"input[{i}]", server.url(f"/{i}.jpg")) for i in range(32)]
        outcomes = await fetcher.fetch_all(urls)
        assert outcomes == [jpeg] * 32
        assert server.most_in_flight == 4
        server.most_in_flight = 0
        both = await asyncio.gather(fetcher.fetch_all(urls[:16]), fetcher.fetch_all(urls[16:]))
        assert [len(outcomes) for outcomes in both] == [16, 16]
        assert server.most_in_flight == 6


async def test_ipv6_hosts_are_checked_and_dialled_like_ipv4() -> None:
    jpeg = photo_jpeg("chelsea", size=(64, 48))
    async with ImageServer({"/cat.jpg": Route(body=jpeg)}, host="::1") as server:
        resolver = FixedResolver({"six.test": ["::1"]})
        allowed, network = _fetcher(resolver, allow=["::1"], allow_http=True)
        assert await _one(allowed, server.url("/cat.jpg")) == jpeg
        assert await _one(allowed, server.url("/cat.jpg", "six.test")) == jpeg
        refused, _ = _fetcher(resolver, allow_http=True, ports=[server.port])
        rule = _error(await _one(refused, server.url("/cat.jpg", "six.test")), "url_forbidden")
        assert "(rule: loopback)" in rule.message
    assert network.dials == [("::1", server.port)] * 2 and len(server.requests) == 2


async def test_disabled_fetching_refuses_every_url() -> None:
    fetcher, network = _fetcher(enabled=False)
    refused = _error(await _one(fetcher, "https://images.example.com/a.jpg"), "url_forbidden")
    assert "(rule: disabled)" in refused.message and network.dials == []
    assert fetcher.outcomes == {("url_forbidden", "disabled"): 1}  # counted for /metrics too


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"),
            *("-addext", f"subjectAltName=DNS:{name}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_verifies_the_url_host_while_dialling_the_checked_address(
    tmp_path: Path,
) -> None:
    cert, key = _certificate(tmp_path, "images.test")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    jpeg = photo_jpeg("chelsea", size=(64, 48))
    async with ImageServer({"/cat.jpg": Route(body=jpeg)}, ssl=server_tls) as server:
        resolver = FixedResolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        fetcher, network = _fetcher(resolver, client_tls, allow=["127.0.0.1"])
        url = server.url("/cat.jpg", "images.test", scheme="https")
        assert await _one(fetcher, url) == jpeg
        assert server.requests == [("/cat.jpg", f"images.test:{server.port}")]
        # The certificate names images.test: another name on the same address is refused.
        wrong = await _one(fetcher, server.url("/cat.jpg", "other.test", scheme="https"))
        assert "certificate" in _error(wrong, "url_unreachable").message
    assert network.refused_dials == []

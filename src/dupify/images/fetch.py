"""Fetches the images a request names by URL, in memory, through the SSRF guard (images.urlguard).

One URL is fetched hop by hop: check the URL, resolve its host once, check every address, then
connect to a checked address and nothing else (the connection never looks the name up again,
so a DNS answer that changes between the check and the connect cannot move it: rebinding). A
redirect is a new hop, checked like the first, at most `max_redirects` of them. The body is
streamed into memory up to the per-image byte cap and refused past it, so an endless body never
costs more than the cap; the whole URL (lookup, hops, body) has one time budget. Environment
proxies are never used: the connection pool below has no proxy, whatever HTTP(S)_PROXY says.

What comes back is bytes for the pipeline's *pre* stage, exactly as if they had been uploaded:
the decoding policy, its caps, the cache (keyed on the bytes, never the URL), the quota and the
usage log all apply after this. URLs are never logged or stored (they can carry tokens).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urljoin

import certifi
import httpcore

from dupify.config import ImageUrlSettings
from dupify.errors import ApiError
from dupify.images.urlguard import IPAddress, Refusal, Target, UrlGuard

# Looks a host name up: every address it has, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Dupify-ImageFetch/1"
log = logging.getLogger(__name__)
_REQUEST_HEADERS = [
    (b"User-Agent", USER_AGENT.encode()),
    (b"Accept", b"image/*"),
    # No compression: the byte cap then caps what is decoded, with no gzip bomb in between.
    (b"Accept-Encoding", b"identity"),
]


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The operating system's answer for `host` (A and AAAA), deduplicated, in its order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class PinnedNetwork(httpcore.AsyncNetworkBackend):
    """Connects a hop's host to its checked addresses only, tried in order; any other host is a
    bug and refused. `inner` does the connecting (tests wrap it to record every dial)."""

    def __init__(
        self, host: str, addresses: Sequence[IPAddress], inner: httpcore.AsyncNetworkBackend
    ) -> None:
        self._host = host
        self._addresses = list(addresses)
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host != self._host:
            raise httpcore.ConnectError(f"connection to an unchecked host {host!r} refused")
        failure: Exception = httpcore.ConnectError("no address")
        for address in self._addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, OSError) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never dialled for an image URL")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class UrlFetcher:
    """Fetches image URLs for one process: the guard, the caps and the concurrency limits.

    `resolver`, `network` and `ssl_context` are seams for tests (a resolver that maps test
    names to chosen addresses, a network that records dials, a test CA); production uses the
    system resolver, anyio sockets and the certifi CA bundle.
    """

    def __init__(
        self,
        settings: ImageUrlSettings,
        max_image_bytes: int,
        *,
        resolver: Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.guard = UrlGuard(settings)
        self.max_image_bytes = max_image_bytes
        self._resolve = resolver or system_resolver
        self._network = network or httpcore.AnyIOBackend()
        self._ssl = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self._slots: asyncio.Semaphore | None = None  # made on first use, in the serving loop
        # (outcome, rule) -> URLs: ("ok", "") or an error code and, when forbidden, the rule.
        self.outcomes: Counter[tuple[str, str]] = Counter()

    async def fetch_all(self, items: Sequence[tuple[str, str]]) -> list[bytes | ApiError]:
        """Each (param, url)'s bytes or its error, in order; at most `per_request` at once."""
        if not self.settings.enabled:
            refused = Refusal("url_forbidden", "disabled", "this server does not fetch image URLs")
            return [self._refused(refused, param) for param, _ in items]
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.per_process)
        process_slots = self._slots
        request_slots = asyncio.Semaphore(self.settings.per_request)

        async def one(param: str, url: str) -> bytes | ApiError:
            async with request_slots:
                try:
                    async with asyncio.timeout(self.settings.timeout_s):
                        async with process_slots:
                            body = await self._fetch(url, param)
                except _Refused as refused:
                    return self._refused(refused.refusal, param)
                except TimeoutError:
                    self.outcomes["url_timeout", ""] += 1
                    return ApiError(
                        "url_timeout",
                        f"{param}: the URL did not answer in full within "
                        f"{self.settings.timeout_s:g} s",
                        param=param,
                    )
                except ApiError as exc:  # what the answer said: a status, its size, a page
                    self.outcomes[exc.code, ""] += 1
                    return exc
                except Exception as exc:  # never a 500 for what a remote server does
                    # The type only: the message of a network error can carry the URL.
                    log.warning("image URL fetch failed unexpectedly: %s", type(exc).__name__)
                    failed = Refusal("url_unreachable", "connect", "the fetch failed")
                    return self._refused(failed, param)
                self.outcomes["ok", ""] += 1
                return body

        return list(await asyncio.gather(*(one(param, url) for param, url in items)))

    def _refused(self, refusal: Refusal, param: str) -> ApiError:
        """The refusal as the item's error, counted for /metrics (forbidden ones by rule)."""
        self.outcomes[refusal.code, refusal.rule if refusal.code == "url_forbidden" else ""] += 1
        return _error(refusal, param)

    async def _fetch(self, url: str, param: str) -> bytes:
        for _hop in range(self.settings.max_redirects + 1):
            checked = self.guard.check_url(url)
            if isinstance(checked, Refusal):
                raise _Refused(checked)
            addresses = await self._addresses(checked)
            refusal = self.guard.check_destination(checked, addresses)
            if refusal is not None:
                raise _Refused(refusal)
            outcome = await self._get(checked, addresses, param)
            if isinstance(outcome, bytes):
                return outcome
            url = urljoin(url, outcome)  # a redirect: check the next hop like the first
        raise _Refused(
            Refusal(
                "url_forbidden",
                "max_redirects",
                f"the URL redirected more than {self.settings.max_redirects} times",
            )
        )

    async def _addresses(self, target: Target) -> list[IPAddress]:
        if target.literal is not None:
            return [target.literal]
        try:
            return await self._resolve(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            reason = "the URL's host name does not resolve"
            raise _Refused(Refusal("url_unreachable", "dns", reason)) from exc

    async def _get(self, target: Target, addresses: list[IPAddress], param: str) -> bytes | str:
        """One hop: the body's bytes, or the `Location` of a redirect."""
        network = PinnedNetwork(target.host, addresses, self._network)
        pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl, max_connections=1, network_backend=network, retries=0
        )
        url = httpcore.URL(
            scheme=target.scheme, host=target.host, port=target.port, target=target.target
        )
        timeouts = {"connect": self.settings.connect_timeout_s, "pool": None}
        timeouts |= {"read": self.settings.timeout_s, "write": self.settings.timeout_s}
        try:
            async with (
                pool,
                pool.stream(
                    "GET", url, headers=_REQUEST_HEADERS, extensions={"timeout": timeouts}
                ) as response,
            ):
                return await self._answer(response, param)
        except httpcore.TimeoutException as exc:
            raise TimeoutError from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, ssl.SSLError, OSError) as exc:
            reason = _unreachable_reason(exc)
            raise _Refused(Refusal("url_unreachable", "connect", reason)) from exc

    async def _answer(self, response: httpcore.Response, param: str) -> bytes | str:
        headers = {name.decode("latin-1").lower(): value for name, value in response.headers}
        if response.status in REDIRECTS and "location" in headers:
            return headers["location"].decode("latin-1")
        if response.status != 200:
            raise ApiError(
                "url_bad_status",
                f"{param}: the URL answered HTTP {response.status}, not 200 with an image",
                param=param,
            )
        declared = headers.get("content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.max_image_bytes:
            raise self._too_large(param)
        content_type = headers.get("content-type", b"").decode("latin-1").lower()
        if content_type.startswith(("text/html", "application/xhtml")):
            raise ApiError(
                "invalid_image", f"{param}: the URL answered a web page, not an image", param=param
            )
        body = bytearray()
        async for chunk in response.aiter_stream():
            if len(body) + len(chunk) > self.max_image_bytes:
                raise self._too_large(param)  # closing the pool drops the connection unread
            body += chunk
        return bytes(body)

    def _too_large(self, param: str) -> ApiError:
        return ApiError(
            "url_too_large",
            f"{param}: the URL's body is over the {self.max_image_bytes}-byte image cap",
            param=param,
        )


class _Refused(Exception):
    """Inside one URL's fetch: the guard (or the network) said no; `fetch_all` answers it."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def _error(refusal: Refusal, param: str) -> ApiError:
    rule = (
        f"; fetching it is forbidden (rule: {refusal.rule})"
        if refusal.code == "url_forbidden"
        else ""
    )
    return ApiError(refusal.code, f"{param}: {refusal.reason}{rule}", param=param)


def _unreachable_reason(exc: BaseException) -> str:
    """A short reason a hop failed that repeats neither the URL nor the address (exception
    texts carry both), from the exception and the causes it wraps."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return "the server's TLS certificate could not be verified"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return "the TLS handshake with the server failed"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "the server refused the connection"
    if any(isinstance(e, httpcore.ProtocolError) for e in chain):
        return "the server did not answer HTTP correctly"
    return "the connection to the server failed"

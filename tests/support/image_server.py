"""Test helper: a real HTTP(S) server on 127.0.0.1 that serves images the way the web does (and
misbehaves on request), plus the resolver and network doubles the URL fetcher takes.

`ImageServer` answers each path as its `routes` say: an image, a redirect, a status, an HTML
page, a body that never ends, an answer that comes too late. It records every request and how
many were in flight at once. `FixedResolver` maps test host names to chosen addresses (and can
change its answer between lookups); `RecordingNetwork` dials loopback only: any other address
is recorded and refused, so a broken guard can never send a test's traffic off this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore

from dupify.images.urlguard import IPAddress


@dataclass
class Route:
    """How the server answers one path."""

    status: int = 200
    body: bytes = b""
    content_type: str = "image/jpeg"
    headers: Sequence[tuple[str, str]] = ()
    delay_s: float = 0.0  # before the status line: a slow server
    endless: bool = False  # stream chunks until the client goes away (no Content-Length)


def redirect(location: str, status: int = 302) -> Route:
    return Route(status=status, content_type="text/plain", headers=[("Location", location)])


@dataclass
class ImageServer:
    """`async with ImageServer(routes) as server:` serves on 127.0.0.1 or ::1 (TLS with `ssl`)."""

    routes: dict[str, Route]
    ssl: ssl.SSLContext | None = None
    host: str = "127.0.0.1"  # or "::1"
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    in_flight: int = 0
    most_in_flight: int = 0
    bytes_sent: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def __aenter__(self) -> ImageServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def url(self, path: str, host: str | None = None, scheme: str = "http") -> str:
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            host = next(
                (line[5:].strip() for line in lines if line.lower().startswith("host:")), ""
            )
            self.requests.append((path, host))
            route = self.routes.get(path.split("?", 1)[0], Route(status=404, body=b"nope"))
            await self._answer(writer, route)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away: what an endless body ends with
        finally:
            self.in_flight -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, route: Route) -> None:
        if route.delay_s:
            await asyncio.sleep(route.delay_s)
        headers = [("Content-Type", route.content_type), ("Connection", "close"), *route.headers]
        if not route.endless:
            headers.append(("Content-Length", str(len(route.body))))
        head = f"HTTP/1.1 {route.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        writer.write(head.encode("latin-1") + b"\r\n")
        if not route.endless:
            writer.write(route.body)
            await writer.drain()
            return
        chunk = b"\xff" * 65536
        while True:  # until the client hangs up
            writer.write(chunk)
            await writer.drain()
            self.bytes_sent += len(chunk)


class FixedResolver:
    """Answers each test host name with chosen addresses; a list of answers is used one per
    lookup (the last one repeats), to play a DNS server that changes its mind."""

    def __init__(self, answers: dict[str, Sequence[str] | Sequence[Sequence[str]]]) -> None:
        self._answers = {host: list(value) for host, value in answers.items()}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        answer = self._answers.get(host)
        if answer is None:
            raise OSError(f"test resolver: no such host {host!r}")
        if answer and not isinstance(answer[0], str):  # one answer per lookup
            sequence: list[Sequence[str]] = answer  # type: ignore[assignment]
            current = sequence[0] if len(sequence) == 1 else sequence.pop(0)
        else:
            current = answer  # type: ignore[assignment]
        return [ipaddress.ip_address(address) for address in current]


class _CountingStream(httpcore.AsyncNetworkStream):
    """A dialled connection that counts the bytes the fetcher read from it."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, network: RecordingNetwork) -> None:
        self._inner = inner
        self._network = network

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._inner.read(max_bytes, timeout)
        self._network.bytes_read += len(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _CountingStream(tls, self._network)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class RecordingNetwork(httpcore.AsyncNetworkBackend):
    """Dials 127.0.0.0/8 and ::1 for real; records any other address and refuses it unseen."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()
        self.dials: list[tuple[str, int]] = []
        self.refused_dials: list[tuple[str, int]] = []
        self.bytes_read = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not ipaddress.ip_address(host).is_loopback:
            self.refused_dials.append((host, port))
            raise httpcore.ConnectError(f"test network: would have dialled {host}")
        self.dials.append((host, port))
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _CountingStream(stream, self)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

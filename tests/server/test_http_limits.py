"""Hardening of `dupify serve` against oversized, malformed and slow requests (server.http): each
attack is made against a real server process on 127.0.0.1, with deadlines set small."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.samples import photo_jpeg
from support.servers import Server, clean_env, start_server, stop_server

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 1
# Only bounds a broken test: every wait below ends as soon as the server answers or closes.
MARGIN_S = 15
KEY = re.compile(r"dpy_[0-9A-Za-z]{38}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = clean_env(
        DUPIFY_SERVER__HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        DUPIFY_SERVER__BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        DUPIFY_SERVER__BODY_MIN_RATE="100",
    )
    server = start_server(tmp_path_factory.mktemp("limits"), env)
    yield server
    output = stop_server(server)
    assert "Traceback" not in output, output


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN_S)


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(server: Server, request: bytes) -> bytes:
    with connect(server) as sock:
        # Refused mid-request, the client may fail to send the rest; the answer is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return read_to_close(sock)


def envelope(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert headers[b"content-type"] == b"application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"type", "code", "message", "param", "request_id"}
    assert headers[b"x-request-id"].decode() == error["request_id"]
    return status, error


def test_a_1mb_header_line_is_refused_with_431(server: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n"
    status, error = envelope(exchange(server, request))
    assert status == 431
    assert error["code"] == "request_header_fields_too_large"
    assert error["type"] == "invalid_request_error"


def test_ten_thousand_headers_are_refused_with_431(server: Server) -> None:
    fields = b"".join(b"X-H%d: v\r\n" % index for index in range(10_000))
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n"
    status, error = envelope(exchange(server, request))
    assert (status, error["code"]) == (431, "request_header_fields_too_large")


def test_more_headers_than_the_count_cap_are_refused_even_when_small(server: Server) -> None:
    fields = b"".join(b"X-%d: v\r\n" % index for index in range(150))  # 1.5 kB, 151 fields
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n"
    status, error = envelope(exchange(server, request))
    assert (status, error["code"]) == (431, "request_header_fields_too_large")
    assert "100 header fields" in error["message"]


def test_garbage_is_refused_with_400_in_the_envelope(server: Server) -> None:
    status, error = envelope(exchange(server, b"\x16\x03\x01garbage\x00\xff\r\n\r\n"))
    assert (status, error["code"]) == (400, "invalid_request")


def test_slow_heads_are_cut_off_while_another_client_is_served(server: Server) -> None:
    slow = [connect(server) for _ in range(40)]
    trickle = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    answers: dict[socket.socket, bytes] = {}
    started = time.monotonic()
    served: httpx.Response | None = None
    try:
        for second in range(HEADER_TIMEOUT_S + MARGIN_S):
            waiting = [sock for sock in slow if sock not in answers]
            if not waiting:
                break
            for sock in waiting:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.send(trickle[second : second + 1])  # one byte a second
            if served is None:
                served = httpx.get(server.base_url + "/healthz", timeout=MARGIN_S)
            pause = max(0.0, started + second + 1 - time.monotonic())
            readable, _, _ = select.select(waiting, [], [], pause)
            for sock in readable:
                answers[sock] = read_to_close(sock)
            time.sleep(max(0.0, started + second + 1 - time.monotonic()))
    finally:
        for sock in slow:
            sock.close()
    assert served is not None and served.status_code == 200
    assert len(answers) == len(slow), "some slow connections were never closed"
    for raw in answers.values():
        status, error = envelope(raw)
        assert (status, error["code"]) == (408, "request_timeout")


def test_a_silent_connection_is_closed_without_an_answer(server: Server) -> None:
    with connect(server) as sock:
        assert read_to_close(sock) == b""


def test_a_trickled_body_is_cut_off(server: Server) -> None:
    key = KEY.findall("".join(server.output))[0]
    head = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 100000\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head)
        for _ in range(4 * (BODY_TIMEOUT_S + MARGIN_S)):
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                break
            sock.send(b"\xff")  # 4 bytes a second, under the 100 the test server asks for
        status, error = envelope(read_to_close(sock))
    assert (status, error["code"]) == (408, "request_timeout")


def test_normal_requests_on_a_kept_alive_connection_are_served(server: Server) -> None:
    key = KEY.findall("".join(server.output))[0]
    jpeg = photo_jpeg("coffee", size=(64, 64))
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        missing_key = client.get("/v1/models")
        embedded = client.post(
            "/v1/embeddings",
            content=jpeg,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
        )
        health = client.get(
            "/healthz", headers={f"X-Fill-{index}": "x" * 100 for index in range(90)}
        )
    assert missing_key.status_code == 401
    assert missing_key.json()["error"]["code"] == "missing_api_key"
    assert embedded.status_code == 200, embedded.text
    assert health.status_code == 200

"""A large upload refused before its end (a 4 MB TIFF: 415 from its content type, 413 once it
passes the per-image cap) is drained before the answer goes out, so a client still sending gets
the answer rather than a connection reset. Against a real `dupify serve`, with a raw socket
client that asks for `Connection: close` (the server closes right after answering; closed with
unread bytes, TCP resets the connection) and sends in chunks, as a slow uploader does."""

from __future__ import annotations

import io
import json
import re
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from support.servers import Server, clean_env, start_server, stop_server

pytestmark = pytest.mark.slow

KEY = re.compile(r"dpy_[0-9A-Za-z]{38}")
MAX_IMAGE_BYTES = 1024 * 1024
CHUNK = 64 * 1024
# Only bounds a broken test: each exchange ends as soon as the server has answered.
MARGIN_S = 60
ATTEMPTS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = clean_env(DUPIFY_LIMITS__MAX_IMAGE_BYTES=str(MAX_IMAGE_BYTES))
    started = start_server(tmp_path_factory.mktemp("uploads"), env)
    yield started
    output = stop_server(started)
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def tiff() -> bytes:
    noise = np.random.default_rng(7).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="TIFF")
    assert len(buffer.getvalue()) > 4_000_000
    return buffer.getvalue()


def multipart(data: bytes) -> tuple[str, bytes]:
    boundary = "dupify-test-boundary"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.tiff"\r\n'
            "Content-Type: image/tiff\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


def upload(server: Server, key: str, content_type: str, body: bytes, chunked: bool) -> bytes:
    """Send the whole request in chunks, then read the answer; a send that fails fails here."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN_S) as sock:
        sock.sendall(head.encode())
        for start in range(0, len(body), CHUNK):
            piece = body[start : start + CHUNK]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            time.sleep(0.002)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("form", "chunked", "status", "code"),
    [
        ("raw image/tiff", False, 415, "unsupported_media_type"),
        ("raw image/tiff", True, 415, "unsupported_media_type"),
        ("raw image/jpeg", False, 413, "payload_too_large"),
        ("multipart", False, 413, "payload_too_large"),
        ("multipart", True, 413, "payload_too_large"),
    ],
)
def test_a_refused_4mb_tiff_gets_its_answer_not_a_reset(
    server: Server, tiff: bytes, form: str, chunked: bool, status: int, code: str
) -> None:
    key = KEY.findall("".join(server.output))[0]
    if form == "multipart":
        content_type, body = multipart(tiff)
    else:
        content_type, body = form.removeprefix("raw "), tiff
    for attempt in range(ATTEMPTS):
        answer = upload(server, key, content_type, body, chunked)
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), (attempt, head)
        error = json.loads(payload)["error"]
        assert (error["code"], error["type"]) == (code, "invalid_request_error"), attempt

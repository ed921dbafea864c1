"""200 concurrent clients each uploading a maximum-size image to a real `dupify serve`: a mix of
images at the cap, one byte over it and not images at all, with room for only a tenth of the
bodies at once (`dupify.images.bodies`). Every answer is a documented status (200, 413, 422, 429
or 503, the last two with Retry-After) and each kind of upload gets its own answer. Statuses
only: the memory bound itself is measured by the bench (issue 16, item 3)."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from support.servers import Server, clean_env, start_server, stop_server

pytestmark = pytest.mark.slow

MAX_IMAGE_BYTES = 200_000  # the cap under test (default 10 MiB; the count of clients is the point)
CLIENTS = 200
KEY = re.compile(r"dpy_[0-9A-Za-z]{38}")
DOCUMENTED = {200, 413, 422, 429, 503}


def jpeg_of_exactly(size: int, seed: int) -> bytes:
    """A real JPEG (small pixels, cheap to decode) padded with comment segments to `size`."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    pixels = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    jpeg = buffer.getvalue()
    padding = b""
    missing = size - len(jpeg)
    while missing > 0:
        # A COM segment: FF FE, a 2-byte length (counting itself), then the bytes.
        chunk = min(65_535 - 2, missing - 4) if missing > 4 else 0
        if chunk <= 0:  # too little room for a segment: lengthen the previous one
            raise AssertionError("unreachable with the sizes used here")
        padding += b"\xff\xfe" + (chunk + 2).to_bytes(2, "big") + bytes(chunk)
        missing -= chunk + 4
    body = jpeg[:2] + padding + jpeg[2:]
    assert len(body) == size
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    env = clean_env(
        DUPIFY_LIMITS__MAX_IMAGE_BYTES=str(MAX_IMAGE_BYTES),
        DUPIFY_LIMITS__MAX_BODY_BYTES=str(4 * MAX_IMAGE_BYTES),
        # Room for a tenth of the bodies at once (the memory bound): most wait their turn.
        DUPIFY_SERVER__BODY_ROOM_BYTES=str(CLIENTS // 10 * MAX_IMAGE_BYTES),
        DUPIFY_PLANS__FREE__REQUESTS_PER_MINUTE="100000",
        DUPIFY_PLANS__FREE__IMAGES_PER_MONTH="100000",
        DUPIFY_PLANS__PRO__REQUESTS_PER_MINUTE="100000",
        DUPIFY_PLANS__PRO__IMAGES_PER_MONTH="100000",
    )
    server = start_server(tmp_path_factory.mktemp("uploads"), env)
    match = KEY.search("".join(server.output))
    assert match, "".join(server.output)
    yield server, match.group(0)
    output = stop_server(server)
    assert "Traceback" not in output, output


def test_200_concurrent_maximum_size_uploads_get_only_documented_answers(
    server: tuple[Server, str],
) -> None:
    running, key = server
    bodies = {
        # Distinct pixels per client, so the result cache answers none of them.
        "at the cap": [jpeg_of_exactly(MAX_IMAGE_BYTES, seed) for seed in range(CLIENTS // 2)],
        "over the cap": [jpeg_of_exactly(MAX_IMAGE_BYTES + 1, 10)],
        "not an image": [b"\x00not an image" * (MAX_IMAGE_BYTES // 13)],
    }
    kinds = ["at the cap"] * (CLIENTS // 2) + ["over the cap", "not an image"] * (CLIENTS // 4)

    async def upload(client: httpx.AsyncClient, index: int, kind: str) -> httpx.Response:
        choices = bodies[kind]
        body = choices[index % len(choices)]
        return await client.post(
            "/v1/embeddings",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
        )

    async def everyone() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(
            base_url=running.base_url, timeout=180, limits=limits
        ) as client:
            return await asyncio.gather(
                *(upload(client, index, kind) for index, kind in enumerate(kinds))
            )

    responses = asyncio.run(everyone())
    expected = {
        "at the cap": {200, 429, 503},
        "over the cap": {413, 429, 503},
        "not an image": {422, 429, 503},
    }
    seen: dict[str, set[int]] = {kind: set() for kind in expected}
    for kind, response in zip(kinds, responses, strict=True):
        assert response.status_code in DOCUMENTED, (kind, response.status_code, response.text)
        assert response.status_code in expected[kind], (kind, response.status_code, response.text)
        if response.status_code in (429, 503):
            assert int(response.headers["Retry-After"]) >= 1
        if response.status_code != 200:
            assert response.json()["error"]["code"]  # the error envelope
        seen[kind].add(response.status_code)
    assert 413 in seen["over the cap"]
    assert seen["at the cap"] & {200, 503}
    # The server is still well after the burst.
    health = httpx.get(running.base_url + "/healthz", timeout=30)
    assert health.status_code == 200

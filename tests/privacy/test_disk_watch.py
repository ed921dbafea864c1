"""PRIVACY row 5: images never touch disk. Large (~15 MB) images go through every input form of
every image endpoint the app has, while the temp and data directories are watched; afterwards
every new or changed file there, every database column, the cache backend and the captured log
are searched for the image's bytes and its base64.

Files created and removed again within a request are invisible to a directory snapshot; the
audit-hook test (`tests/api/test_images_stay_in_memory.py`) catches those.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from dupify.images.workers import Decoder
from support.fixtures import BIG_LIMITS
from support.kv import redis_contents
from support.samples import noise_png, photo_jpeg
from support.stored import files_holding, object_bytes, snapshot, stored_values

IMAGE_ROUTES = ("/v1/embeddings", "/v1/analyze", "/v1/compare", "/v1/duplicates")


@pytest.fixture(scope="module")
def big_image() -> bytes:
    image: bytes = noise_png(2300, 2200, seed=5)
    assert 15_000_000 < len(image) < BIG_LIMITS.max_image_bytes
    return image


def needles(image: bytes) -> list[bytes]:
    """Distinctive pieces: raw bytes from two places, and base64 aligned to whole triplets (so it
    appears in the base64 of the whole file, wherever that is stored)."""
    middle = len(image) // 2
    encoded: bytes = base64.b64encode(image)
    start = (len(encoded) // 2) // 4 * 4
    return [image[middle : middle + 64], image[-4096:-4032], encoded[start : start + 88]]


def watched_directories(database_url: str) -> list[Path]:
    directories = {Path(tempfile.gettempdir()), Path("/dev/shm")}
    if os.environ.get("TMPDIR"):
        directories.add(Path(os.environ["TMPDIR"]))
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        directories.add(Path(url.database).parent)
    return sorted(path for path in directories if path.is_dir())


def requests_for(route: str, image: bytes, small: bytes) -> dict[str, dict[str, Any]]:
    """Every input form the route takes (API section 2), each carrying the big image."""
    encoded, small_encoded = base64.b64encode(image).decode(), base64.b64encode(small).decode()
    raw = {"content": image, "headers": {"Content-Type": "image/png"}}
    if route in ("/v1/embeddings", "/v1/analyze"):
        return {
            "json": {"json": {"input": encoded}},
            "multipart": {"files": [("file", ("big.png", image, "image/png"))]},
            "raw": raw,
        }
    if route == "/v1/compare":
        return {
            "json": {"json": {"a": encoded, "b": small_encoded}},
            "multipart": {
                "files": [
                    ("a", ("big.png", image, "image/png")),
                    ("b", ("small.jpg", small, "image/jpeg")),
                ]
            },
        }
    if route == "/v1/duplicates":
        return {
            "json": {"json": {"input": [encoded, small_encoded]}},
            "multipart": {
                "files": [
                    ("file", ("big.png", image, "image/png")),
                    ("file", ("small.jpg", small, "image/jpeg")),
                ]
            },
        }
    raise AssertionError(f"no request builder for the image route {route}: add its input forms")


async def test_large_images_never_reach_disk_the_database_the_cache_or_the_log(
    api_factory: Callable[..., Any],
    big_decoder: Decoder,
    big_image: bytes,
    cache_backend: dict[str, Any],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pieces = needles(big_image)
    small = photo_jpeg("coffee")
    async with api_factory(limits=BIG_LIMITS, decoder=big_decoder, **cache_backend) as api:
        # From the OpenAPI document: every POST route the app serves, as it is mounted.
        paths = api.app.openapi()["paths"]
        routes = sorted(path for path in IMAGE_ROUTES if "post" in paths.get(path, {}))
        assert "/v1/embeddings" in routes
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        directories = watched_directories(database_url)
        before = snapshot(directories)
        sent = []
        for route in routes:
            for form in requests_for(route, big_image, small):
                # Twice: the second is a cache hit where the route caches, and must not store
                # the image either.
                for _ in range(2):
                    request = requests_for(route, big_image, small)[form]
                    headers = {**auth, **request.pop("headers", {})}
                    response = await api.client.post(route, headers=headers, timeout=120, **request)
                    assert response.status_code == 200, (route, form, response.text[:300])
                sent.append((route, form))
        await api.flush_usage()
        after = snapshot(directories)

        assert files_holding(before, after, pieces) == []
        for value in stored_values(api):
            assert not any(piece in value for piece in pieces)
        cache = api.app.state.runtime.cache
        if cache.backend == "embedded":
            assert len(cache) > 0, "the cache holds nothing: the search would prove nothing"
            cache_values = list(object_bytes(cache))
        else:
            contents = redis_contents(cache_backend)
            assert contents, "Redis holds nothing: the search would prove nothing"
            cache_values = [key + value for key, value in contents.items()]
        for value in cache_values:
            assert not any(piece in value for piece in pieces)
    logged = (caplog.text + "".join(str(r.args) for r in caplog.records)).encode()
    assert not any(piece in logged for piece in pieces)
    assert len(sent) >= 3


def test_the_search_finds_image_bytes_in_a_file_that_holds_them(
    tmp_path: Path, big_image: bytes
) -> None:
    """Control: the snapshot and search do catch an image written to a watched directory."""
    directories = [tmp_path]
    before = snapshot(directories)
    (tmp_path / "spooled").write_bytes(b"header" + big_image)
    (tmp_path / "encoded").write_bytes(base64.b64encode(big_image))
    (tmp_path / "unrelated").write_bytes(b"nothing to see")
    after = snapshot(directories)
    found = files_holding(before, after, needles(big_image))
    assert sorted(Path(path).name for path in found) == ["encoded", "spooled"]

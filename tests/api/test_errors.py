"""Every bad input gets its documented code in the one envelope, never a 500."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from datetime import timedelta

import httpx
import pytest
from PIL import Image

from dupify.keys.format import generate_key
from support.api import Api
from support.samples import photo_jpeg


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: the caps must refuse it before decoding."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def gif_with_frames(count: int) -> bytes:
    frames = [Image.new("L", (8, 8), color=index % 256) for index in range(count)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, format="TIFF")
    return buffer.getvalue()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"type", "code", "message", "param", "request_id"}
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert error["message"]
    return error


async def test_authentication_failures(api: Api) -> None:
    good = api.new_key()
    jpeg = photo_jpeg("chelsea", size=(64, 64))
    url = "/v1/embeddings"

    async def post(headers: dict[str, str]) -> httpx.Response:
        return await api.client.post(
            url, content=jpeg, headers={"Content-Type": "image/jpeg", **headers}
        )

    assert_error(await post({}), 401, "missing_api_key")
    assert_error(await post({"Authorization": "Basic abc"}), 401, "invalid_api_key")
    assert_error(await post({"Authorization": f"Bearer {generate_key()}"}), 401, "invalid_api_key")
    typo = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    assert_error(await post({"Authorization": f"Bearer {typo}"}), 401, "invalid_api_key")
    assert (await post({"Authorization": f"Bearer {good}"})).status_code == 200

    expired = api.new_key(expires_in=timedelta(microseconds=1))
    assert_error(await post({"Authorization": f"Bearer {expired}"}), 401, "invalid_api_key")

    narrow = api.new_key(scopes=["analyze"])
    assert_error(await post({"Authorization": f"Bearer {narrow}"}), 403, "insufficient_scope")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"", "application/json", 400, "invalid_request"),
        (b"", "image/jpeg", 422, "invalid_image"),
        (b"hello, I am text and not an image", "image/png", 422, "invalid_image"),
        (photo_jpeg("chelsea")[:5000], "image/jpeg", 422, "invalid_image"),
        (png_declaring(8000, 7500), "image/png", 422, "image_too_large"),
        (png_declaring(13_000, 10), "image/png", 422, "image_too_large"),
        (gif_with_frames(200), "image/gif", 422, "too_many_frames"),
        (tiff(), "image/jpeg", 415, "unsupported_media_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png", 415, "unsupported_media_type"),
        (b"{not json", "application/json", 400, "invalid_request"),
        (b"[1, 2]", "application/json", 400, "invalid_request"),
        (b'{"input": "!!!not base64!!!"}', "application/json", 400, "invalid_request"),
        (b'{"input": []}', "application/json", 400, "invalid_request"),
        (b'{"input": 5}', "application/json", 400, "invalid_request"),
        (b"plain", "text/plain", 415, "unsupported_media_type"),
    ],
    ids=[
        "empty-json",
        "empty-raw",
        "text-as-image",
        "truncated-jpeg",
        "png-header-60mp",
        "side-over-cap",
        "gif-200-frames",
        "tiff",
        "svg",
        "malformed-json",
        "json-not-object",
        "bad-base64",
        "no-images",
        "input-wrong-type",
        "text-plain",
    ],
)
async def test_bad_bodies(api: Api, body: bytes, content_type: str, status: int, code: str) -> None:
    key = api.new_key()
    response = await api.client.post(
        "/v1/embeddings",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
    )
    assert_error(response, status, code)


async def test_bad_image_in_a_batch_names_its_index(api: Api) -> None:
    key = api.new_key()
    good = base64.b64encode(photo_jpeg("coffee")).decode()
    bad = base64.b64encode(photo_jpeg("coffee")[:3000]).decode()
    response = await api.client.post(
        "/v1/embeddings",
        json={"input": [good, good, bad]},
        headers={"Authorization": f"Bearer {key}"},
    )
    error = assert_error(response, 422, "invalid_image")
    assert error["param"] == "input[2]"


async def test_too_many_images_and_unknown_model(api: Api) -> None:
    key = api.new_key()
    tiny = base64.b64encode(photo_jpeg("chelsea", size=(32, 32))).decode()
    auth = {"Authorization": f"Bearer {key}"}
    many = await api.client.post("/v1/embeddings", json={"input": [tiny] * 33}, headers=auth)
    assert_error(many, 400, "too_many_images")
    unknown = await api.client.post(
        "/v1/embeddings", json={"input": tiny, "model": "gpt-vision-9"}, headers=auth
    )
    assert_error(unknown, 404, "model_not_found")


async def test_oversized_bodies_are_refused_while_streaming(api: Api) -> None:
    key = api.new_key()
    auth = {"Authorization": f"Bearer {key}"}
    big = b"\xff\xd8\xff" + b"\0" * (25 * 1024 * 1024)
    declared = await api.client.post(
        "/v1/embeddings", content=big, headers={**auth, "Content-Type": "image/jpeg"}
    )
    assert_error(declared, 413, "payload_too_large")

    async def chunks() -> object:
        for _ in range(25):
            yield b"\0" * (1024 * 1024)

    undeclared = await api.client.post(
        "/v1/embeddings", content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert "content-length" not in undeclared.request.headers
    assert_error(undeclared, 413, "payload_too_large")

    one_part_too_big = await api.client.post(
        "/v1/embeddings",
        files={"file": ("big.jpg", b"\xff\xd8\xff" + b"\0" * (11 * 1024 * 1024), "image/jpeg")},
        headers=auth,
    )
    error = assert_error(one_part_too_big, 413, "payload_too_large")
    assert error["param"] == "file[0]"


async def test_framework_errors_use_the_envelope(api: Api) -> None:
    assert_error(await api.client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await api.client.get("/v1/embeddings"), 405, "method_not_allowed")


async def test_client_request_id_is_echoed_when_well_formed(api: Api) -> None:
    ok = await api.client.get("/healthz", headers={"X-Request-Id": "client-trace-12345"})
    assert ok.headers["X-Request-Id"] == "client-trace-12345"
    odd = await api.client.get("/healthz", headers={"X-Request-Id": "bad id\twith tab"})
    assert odd.headers["X-Request-Id"].startswith("req_")

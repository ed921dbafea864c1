"""PRIVACY.md row 5: no image byte reaches a file while it is uploaded, in any input form.

A Python audit hook records every `open` in this process while 15 MB images are uploaded. It
catches Starlette's spooled multipart parts too: they are unnamed `O_TMPFILE` files, invisible
in a directory listing but still an `open` of the temp directory.
"""

from __future__ import annotations

import base64
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dupify.images.workers import Decoder
from support.api import Api
from support.fixtures import BIG_LIMITS
from support.samples import noise_png


class OpenRecorder:
    """One process-wide audit hook (hooks cannot be removed), switched on around a block."""

    def __init__(self) -> None:
        self.active = False
        self.opened: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active and event in ("open", "os.open", "tempfile.mkstemp", "tempfile.mkdtemp"):
            with self._lock:
                self.opened.append((event, args))

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, Any]]]:
        self.opened = []
        self.active = True
        try:
            yield self.opened
        finally:
            self.active = False


@pytest.fixture(scope="module")
def open_recorder() -> OpenRecorder:
    return OpenRecorder()


def _writes_or_temp(opened: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    temp_dir = tempfile.gettempdir()
    suspicious = []
    for event, args in opened:
        path = args[0] if args else None
        mode = args[1] if len(args) > 1 else None
        in_temp = isinstance(path, str | bytes) and str(path).startswith(temp_dir)
        writing = isinstance(mode, str) and any(flag in mode for flag in "wax+")
        if event.startswith("tempfile") or in_temp or writing:
            suspicious.append((event, args))
    return suspicious


@pytest.fixture
async def big_api(api_factory: Callable[..., Any], big_decoder: Decoder) -> Any:
    async with api_factory(limits=BIG_LIMITS, decoder=big_decoder) as running:
        yield running


@pytest.mark.parametrize("form", ["json", "multipart", "raw"])
@pytest.mark.parametrize("with_key", [True, False], ids=["valid-key", "no-key"])
async def test_no_file_is_opened_during_a_15mb_upload(
    big_api: Api, open_recorder: OpenRecorder, form: str, with_key: bool
) -> None:
    image = noise_png(2300, 2200)
    assert len(image) > 15_000_000
    headers = {"Authorization": f"Bearer {big_api.new_key()}"} if with_key else {}
    request: dict[str, Any]
    if form == "json":
        request = {"json": {"input": base64.b64encode(image).decode()}}
    elif form == "multipart":
        request = {"files": {"file": ("big.png", image, "image/png")}}
    else:
        request = {"content": image}
        headers["Content-Type"] = "image/png"
    with open_recorder.recording() as opened:
        response = await big_api.client.post("/v1/embeddings", headers=headers, **request)
    assert response.status_code == (200 if with_key else 401), response.text[:300]
    assert _writes_or_temp(opened) == []


async def test_the_recorder_catches_starlettes_spooled_upload(open_recorder: OpenRecorder) -> None:
    """Control: the hook sees the unnamed temp file Starlette's own form parser would create."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def naive_upload(request: Request) -> PlainTextResponse:
        async with request.form() as form:
            return PlainTextResponse(str(len(form)))

    app = Starlette(routes=[Route("/upload", naive_upload, methods=["POST"])])
    image = noise_png(1200, 1000)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://naive.test") as client:
        with open_recorder.recording() as opened:
            response = await client.post("/upload", files={"file": ("a.png", image, "image/png")})
    assert response.status_code == 200
    assert _writes_or_temp(opened) != []

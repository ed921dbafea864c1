"""The body reader (dupify.images.inputs) on its own, with a made-up request: what a parser refuses
is `invalid_request`, and a refused body is drained within its bounds before the refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

import pytest

from dupify.config import ImageLimits
from dupify.errors import ApiError
from dupify.images import inputs
from dupify.images.inputs import read_capped_body, read_request_body

LIMITS = ImageLimits(max_body_bytes=1000, max_image_bytes=500)


@dataclass
class FakeRequest:
    """Headers and a body in chunks; `sent` counts the chunks the reader took."""

    headers: Mapping[str, str]
    chunks: Iterable[bytes]
    stall: bool = False  # after the chunks, wait forever instead of ending
    sent: list[bytes] = field(default_factory=list)

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent.append(chunk)
            yield chunk
        if self.stall:
            await asyncio.Event().wait()


def request(content_type: str, chunks: list[bytes], **headers: str) -> FakeRequest:
    return FakeRequest({"content-type": content_type, **headers}, chunks)


async def refusal(fake: FakeRequest, limits: ImageLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as refused:
        await read_request_body(fake, limits)
    return refused.value


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"input": "aGk=", "dimensions": ' + b"9" * 5_000 + b"}",
        b'{"x": [' + b"1" * 4_301 + b"]}",
        b"\xff\xfe{}",
        b"{",
    ],
    ids=["nested 100,000 deep", "5,000 digits", "4,301 digits", "not UTF-8", "cut short"],
)
async def test_json_the_parser_refuses_is_invalid_request(body: bytes) -> None:
    limits = ImageLimits(max_body_bytes=len(body) + 1)
    error = await refusal(request("application/json", [body]), limits)
    assert error.code == "invalid_request" and error.message.startswith("malformed JSON")


async def test_a_content_type_not_taken_is_refused_before_the_body_is_read_then_drained() -> None:
    fake = request("image/tiff", [b"II*\x00" + b"x" * 96] * 5)
    error = await refusal(fake)
    assert error.code == "unsupported_media_type"
    assert len(fake.sent) == 5  # all of it drained, none of it kept


async def test_a_raw_image_is_refused_at_the_per_image_cap_and_the_rest_drained() -> None:
    fake = request("image/jpeg", [b"x" * 100] * 8)
    error = await refusal(fake)
    assert (error.code, error.param) == ("payload_too_large", "body")
    assert len(fake.sent) == 8


async def test_the_drain_stops_at_its_byte_bound() -> None:
    fake = request("text/plain", [b"x" * 100] * 50)  # 5,000 bytes, the bound is 1,000 more
    await refusal(fake)
    assert 10 <= len(fake.sent) <= 11


async def test_a_body_declared_longer_than_the_bound_is_not_drained() -> None:
    fake = request("text/plain", [b"x" * 100] * 50, **{"content-length": "5000"})
    await refusal(fake)
    assert fake.sent == []


async def test_a_client_waiting_for_100_continue_is_not_asked_for_its_body() -> None:
    fake = request("text/plain", [b"x" * 100] * 5, expect="100-continue")
    await refusal(fake)
    assert fake.sent == []


async def test_the_drain_gives_up_on_a_body_that_stops_coming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inputs, "DRAIN_TIMEOUT_S", 0.05)
    fake = FakeRequest({"content-type": "text/plain"}, [b"x" * 100], stall=True)
    assert (await refusal(fake)).code == "unsupported_media_type"


async def test_a_capped_body_is_drained_after_its_413() -> None:
    fake = FakeRequest({}, [b"x" * 100] * 15)
    with pytest.raises(ApiError) as refused:
        await read_capped_body(fake, 1000)
    assert refused.value.code == "payload_too_large"
    assert len(fake.sent) == 15

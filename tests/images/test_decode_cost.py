"""The decode cost read from headers: every accepted format, what the JPEG decoder really
decodes, unreadable and refused uploads, and the issue's slow PNG."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dupify.config import ImageLimits
from dupify.images.cost import WORKING_BYTES_PER_PIXEL, decode_cost, worst_cost
from support.samples import deep_png

LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


RGB = Image.fromarray(np.random.default_rng(5).integers(0, 256, (300, 400, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("data", "pixel_bytes"),
    [
        (encode(RGB, "PNG"), 3),
        (encode(RGB.convert("RGBA"), "PNG"), 4),
        (encode(RGB.convert("P"), "PNG"), 1),
        (encode(RGB.convert("L"), "PNG"), 1),
        (deep_png(400, 300), 8),
        (deep_png(400, 300, colour=0, channels=1), 2),
        (encode(RGB, "GIF"), 1),
        (encode(RGB, "BMP"), 3),
        (encode(RGB.convert("P"), "BMP"), 1),
        (encode(RGB, "WEBP", quality=80), 8),
        (encode(RGB, "WEBP", lossless=True), 8),
        (encode(RGB.convert("RGBA"), "WEBP"), 8),
    ],
    ids=[
        "png-rgb",
        "png-rgba",
        "png-palette",
        "png-grey",
        "png-16-bit-rgba",
        "png-16-bit-grey",
        "gif",
        "bmp-24",
        "bmp-8",
        "webp-lossy",
        "webp-lossless",
        "webp-alpha",
    ],
)
def test_the_cost_is_pixels_times_their_bytes_and_the_working_copies(
    data: bytes, pixel_bytes: int
) -> None:
    assert decode_cost(data, LIMITS, 224) == 400 * 300 * (pixel_bytes + WORKING_BYTES_PER_PIXEL)


@pytest.mark.parametrize("side", [64, 150, 300, 700, 2000])
def test_a_jpeg_costs_the_size_it_is_really_decoded_at(side: int) -> None:
    photo = RGB.resize((2400, 1600))
    data = encode(photo, "JPEG", quality=90)
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side, side))  # what decode_image asks of Pillow
        scaled = image.size[0] * image.size[1]
    coefficients = 2400 * 1600 * 3 // 8
    assert decode_cost(data, LIMITS, side) == scaled * (3 + WORKING_BYTES_PER_PIXEL) + coefficients


def test_a_progressive_jpeg_costs_its_whole_image_of_coefficients() -> None:
    photo = RGB.resize((2400, 1600))
    baseline = decode_cost(encode(photo, "JPEG"), LIMITS, 224)
    progressive = decode_cost(encode(photo, "JPEG", progressive=True), LIMITS, 224)
    assert progressive - baseline == 2400 * 1600 * 3 * 2 - 2400 * 1600 * 3 // 8


def test_a_jpeg_header_after_many_segments_or_none_is_the_worst_case() -> None:
    photo = encode(RGB, "JPEG")
    comments = b"".join(b"\xff\xfe\x00\x04hi" for _ in range(300))
    assert decode_cost(photo[:2] + comments + photo[2:], LIMITS, 224) == worst_cost(LIMITS)
    assert decode_cost(b"\xff\xd8\xff\xe0\x00\x10JFIF", LIMITS, 224) == worst_cost(LIMITS)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dJUNK" + b"\x00" * 20,  # no IHDR where it must be
        b"GIF89a\x01",  # cut inside the screen descriptor
        b"RIFF\x00\x00\x00\x00WEBPVP8Z" + b"\x00" * 20,  # an unknown first chunk
    ],
)
def test_an_unreadable_header_costs_the_worst_case(data: bytes) -> None:
    assert decode_cost(data, LIMITS, 224) == worst_cost(LIMITS) == 40_000_000 * 16


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"plain text",
        encode(RGB, "TIFF"),
        deep_png(12_001, 1, depth=8, colour=0, channels=1),  # a side over the cap
        deep_png(7000, 7000, depth=1, colour=0, channels=1),  # over the pixel cap
    ],
)
def test_what_is_refused_before_decoding_costs_next_to_nothing(data: bytes) -> None:
    assert decode_cost(data, LIMITS, 224) == 1


def test_the_issues_slow_png_is_costed_as_deep_as_it_is() -> None:
    """6300x6300 16-bit RGBA in about 300 KB: 40 MP of 8-byte pixels, so 16 of them are far
    over a request's default budget, and one fits within the default decoding at once."""
    data = deep_png(6300, 6300)
    assert len(data) < 400_000
    cost = decode_cost(data, LIMITS, 224)
    assert cost == 6300 * 6300 * 16
    assert 16 * cost > LIMITS.max_request_decode_bytes
    assert cost < LIMITS.max_decoding_bytes < 2 * cost

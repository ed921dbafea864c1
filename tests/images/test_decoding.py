"""The decoding policy on real in-memory images, and the process-pool Decoder that runs it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import pickle
import random
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image
from skimage import data as photos

from dupify.config import ImageLimits
from dupify.errors import ApiError
from dupify.images.decoding import DecodedImage, decode_image
from dupify.images.workers import Decoder

LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def chelsea(size: tuple[int, int] | None = None) -> Image.Image:
    image = Image.fromarray(photos.chelsea())
    return image if size is None else image.resize(size, Image.Resampling.BILINEAR)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def handmade_png(width: int, height: int, idat: bytes, filler_chunks: int = 0) -> bytes:
    """An RGB PNG whose IHDR says width x height, whatever the IDAT really holds."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    filler = png_chunk(b"ruSt", b"") * filler_chunks
    return b"\x89PNG\r\n\x1a\n" + ihdr + filler + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def handmade_gif(frames: int) -> bytes:
    """A 1x1 GIF with `frames` image blocks (Pillow's writer would merge identical frames)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * frames + b"\x3b"


def refusal(data: bytes, limits: ImageLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as caught:
        decode_image(data, limits)
    return caught.value


def rgb_sha256(image: Image.Image) -> str:
    width, height = image.size
    return hashlib.sha256(f"{width},{height}\n".encode() + image.tobytes()).hexdigest()


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "mode"),
    [
        ("JPEG", {"quality": 92}, "RGB"),
        ("PNG", {}, "RGB"),
        ("WEBP", {"quality": 90}, "RGB"),
        ("GIF", {}, "P"),
        ("BMP", {}, "RGB"),
    ],
)
def test_each_allowed_format_decodes(fmt: str, options: dict[str, Any], mode: str) -> None:
    original = chelsea()
    decoded = decode_image(encode(original, fmt, **options), LIMITS)
    assert isinstance(decoded, DecodedImage)
    assert (decoded.format, decoded.mode) == (fmt.lower(), mode)
    assert (decoded.width, decoded.height) == original.size == (451, 300)
    assert decoded.pixels.shape == (300, 451, 3)
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.flags.c_contiguous
    assert (decoded.frames, decoded.animated, decoded.exif_gps_present) == (1, False, False)
    difference = np.abs(decoded.pixels.astype(int) - np.asarray(original, dtype=int)).mean()
    assert difference < 12  # lossy formats and GIF's palette stay close to the photo


def test_big_jpeg_is_decoded_through_dct_scaling_and_reduced() -> None:
    decoded = decode_image(encode(chelsea((4000, 3000)), "JPEG", quality=90), LIMITS)
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.pixels.shape == (512, 683, 3)
    assert decoded.pixel_sha256 == ""  # draft was used: the full-resolution pixels never existed


def test_small_jpeg_is_decoded_at_full_resolution_and_hashed() -> None:
    data = encode(chelsea(), "JPEG")
    decoded = decode_image(data, LIMITS)
    assert decoded.pixel_sha256 == rgb_sha256(Image.open(io.BytesIO(data)).convert("RGB"))


def test_working_side_reduces_other_formats_but_never_upscales() -> None:
    data = encode(chelsea((1200, 800)), "PNG")
    reduced = decode_image(data, LIMITS, working_side=200)
    assert reduced.pixels.shape == (200, 300, 3)
    assert (reduced.width, reduced.height) == (1200, 800)
    full = decode_image(data, LIMITS, working_side=5000)
    assert full.pixels.shape == (800, 1200, 3)
    assert reduced.pixel_sha256 == full.pixel_sha256 != ""


def test_pixel_sha256_is_the_same_for_png_and_lossless_webp() -> None:
    original = chelsea()
    as_png = decode_image(encode(original, "PNG"), LIMITS)
    as_webp = decode_image(encode(original, "WEBP", lossless=True), LIMITS)
    assert as_png.pixel_sha256 == as_webp.pixel_sha256 == rgb_sha256(original)
    assert decode_image(encode(original.rotate(180), "PNG"), LIMITS).pixel_sha256 != (
        as_png.pixel_sha256
    )


def test_mpo_is_reported_as_its_primary_jpeg() -> None:
    original = chelsea()
    data = encode(original, "MPO", save_all=True, append_images=[original.rotate(180)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    decoded = decode_image(data, LIMITS)
    assert (decoded.format, decoded.frames, decoded.animated) == ("jpeg", 1, False)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_reports_frames_and_decodes_the_first(fmt: str) -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames = [Image.new("RGB", (40, 30), colour) for colour in colours]
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options)
    decoded = decode_image(data, LIMITS)
    assert (decoded.frames, decoded.animated) == (3, True)
    assert np.abs(decoded.pixels.astype(int) - colours[0]).max() <= 4


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        (chelsea().convert("L"), "L"),
        (chelsea().convert("1"), "1"),
        (chelsea().convert("P"), "P"),
        (chelsea().convert("LA"), "LA"),
    ],
)
def test_non_rgb_modes_come_out_as_rgb(image: Image.Image, mode: str) -> None:
    decoded = decode_image(encode(image, "PNG"), LIMITS)
    assert decoded.mode == mode
    expected = np.asarray(image.convert("RGB"), dtype=int)
    assert np.abs(decoded.pixels.astype(int) - expected).max() <= 1


def test_cmyk_jpeg_is_converted() -> None:
    original = chelsea()
    decoded = decode_image(encode(original.convert("CMYK"), "JPEG", quality=95), LIMITS)
    assert decoded.mode == "CMYK"
    assert np.abs(decoded.pixels.astype(int) - np.asarray(original, dtype=int)).mean() < 6


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = np.asarray(chelsea().convert("L"), dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(grey * 257), "PNG"), LIMITS)
    assert decoded.mode.startswith("I")
    assert np.array_equal(decoded.pixels[..., 0], grey)


# --- orientation, transparency, metadata ---------------------------------------------------


def quadrants() -> np.ndarray:
    """60x40 with a distinct colour per quadrant, so any rotation or flip is visible."""
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:20, :30] = (255, 0, 0)
    pixels[:20, 30:] = (0, 255, 0)
    pixels[20:, :30] = (0, 0, 255)
    pixels[20:, 30:] = (255, 255, 0)
    return pixels


def orientation_exif(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = value
    return exif


def test_exif_orientation_6_rotates_the_pixels() -> None:
    pixels = quadrants()
    data = encode(Image.fromarray(pixels), "PNG", exif=orientation_exif(6))
    decoded = decode_image(data, LIMITS)
    assert (decoded.width, decoded.height) == (40, 60)
    assert np.array_equal(decoded.pixels, np.rot90(pixels, k=-1))  # 90 degrees clockwise


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (3, lambda p: np.rot90(p, 2)),
        (8, lambda p: np.rot90(p, 1)),
        (2, lambda p: p[:, ::-1]),
        (5, lambda p: p.transpose(1, 0, 2)),
    ],
)
def test_other_orientations(orientation: int, expected: Any) -> None:
    pixels = quadrants()
    data = encode(Image.fromarray(pixels), "PNG", exif=orientation_exif(orientation))
    assert np.array_equal(decode_image(data, LIMITS).pixels, expected(pixels))


def test_orientation_is_applied_to_a_drafted_jpeg() -> None:
    upright = chelsea((2000, 4000))
    data = encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=orientation_exif(6))
    decoded = decode_image(data, LIMITS)
    assert (decoded.width, decoded.height) == (2000, 4000)
    assert decoded.pixels.shape == (1024, 512, 3)
    assert decoded.pixel_sha256 == ""
    expected = np.asarray(upright.resize((512, 1024), Image.Resampling.BILINEAR), dtype=int)
    assert np.abs(decoded.pixels.astype(int) - expected).mean() < 8


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_transparent_pixels_come_out_white(fmt: str) -> None:
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere...
    rgba[:, :10, 3] = 0  # ...transparent on the left
    rgba[:, 10:, 3] = 255
    options = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    decoded = decode_image(encode(Image.fromarray(rgba), fmt, **options), LIMITS)
    assert decoded.mode == "RGBA"
    assert (decoded.pixels[:, :10] == 255).all()
    assert (decoded.pixels[:, 10:] == (255, 0, 0)).all()


def test_half_transparent_black_is_grey_and_a_gif_transparent_index_is_white() -> None:
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert abs(int(decode_image(encode(half, "PNG"), LIMITS).pixels[0, 0, 0]) - 127) <= 1
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30])
    decoded = decode_image(encode(palette, "GIF", transparency=1), LIMITS)
    assert (decoded.pixels == 255).all()


def gps_exif() -> bytes:
    exif = Image.Exif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 1.0)
    # bytes, not the Exif object: PNG's writer skips an Exif whose only tags are in a sub-IFD.
    return exif.tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_gps_exif_is_detected(fmt: str) -> None:
    assert decode_image(encode(chelsea(), fmt, exif=gps_exif()), LIMITS).exif_gps_present
    plain_exif = orientation_exif(1).tobytes()
    assert not decode_image(encode(chelsea(), fmt, exif=plain_exif), LIMITS).exif_gps_present
    assert not decode_image(encode(chelsea(), fmt), LIMITS).exif_gps_present


# --- refusals ------------------------------------------------------------------------------


def test_empty_and_oversized_payloads() -> None:
    assert refusal(b"").code == "invalid_image"
    small = LIMITS.model_copy(update={"max_image_bytes": 1000})
    assert refusal(encode(chelsea(), "PNG"), small).code == "payload_too_large"


@pytest.mark.parametrize(
    ("data", "code", "named"),
    [
        (b"hello, this is not an image", "invalid_image", None),
        (b"<html><body>hi</body></html>", "invalid_image", None),
        (b"II*\x00" + bytes(100), "unsupported_media_type", "TIFF"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', None, "SVG"),
        (b"\xef\xbb\xbf  <svg width='10' height='10'></svg>", None, "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", None, "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", None, "AVIF"),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10", None, "ICO"),
        (b"%PDF-1.7\n", None, "PDF"),
    ],
)
def test_unknown_and_refused_formats(data: bytes, code: str | None, named: str | None) -> None:
    error = refusal(data)
    assert error.code == (code or "unsupported_media_type")
    if named is not None:
        assert named in error.message


def test_a_real_tiff_is_refused_before_pillow() -> None:
    error = refusal(encode(chelsea(), "TIFF"))
    assert (error.code, error.status) == ("unsupported_media_type", 415)


def test_a_format_left_out_of_allowed_formats_is_refused() -> None:
    png_only = LIMITS.model_copy(update={"allowed_formats": frozenset({"png"})})
    error = refusal(encode(chelsea(), "JPEG"), png_only)
    assert error.code == "unsupported_media_type" and "PNG" in error.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_truncated_images_are_invalid(fmt: str) -> None:
    data = encode(chelsea(), fmt)
    assert refusal(data[: len(data) // 2]).code == "invalid_image"


def test_a_60_megapixel_header_is_refused_without_decoding() -> None:
    # The IDAT is garbage: decoding it would fail as invalid_image, so the code proves the order.
    data = handmade_png(8000, 7500, b"not zlib at all")
    started = time.perf_counter()
    error = refusal(data)
    assert error.code == "image_too_large" and "8000x7500" in error.message
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("width", "height"),
    [(12_001, 10), (10, 30_000), (10_000, 9_500), (40_000, 40_000)],
)
def test_sides_and_pixel_counts_over_the_caps(width: int, height: int) -> None:
    # The last two also trip Pillow's own bomb checks inside Image.open; the code is the same.
    assert refusal(handmade_png(width, height, b"")).code == "image_too_large"


def test_frame_cap() -> None:
    error = refusal(handmade_gif(200))
    assert error.code == "too_many_frames" and "200" in error.message
    assert decode_image(handmade_gif(100), LIMITS).frames == 100


def test_working_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="working_side"):
        decode_image(encode(chelsea(), "PNG"), LIMITS, working_side=0)


def mutations(data: bytes, count: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        mutated = bytearray(data)
        action = rng.randrange(3)
        if action == 0:
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        elif action == 1:
            del mutated[rng.randrange(1, len(mutated)) :]
        else:
            start = rng.randrange(len(mutated))
            mutated[start:start] = mutated[start : start + rng.randint(1, 64)]
        yield bytes(mutated)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("GIF", {}),
        ("PNG", {}),
        ("JPEG", {"progressive": True, "exif": gps_exif()}),
        ("WEBP", {}),
        ("BMP", {}),
    ],
)
def test_fuzzed_files_never_escape_as_other_exceptions(fmt: str, options: dict[str, Any]) -> None:
    data = encode(chelsea((96, 64)), fmt, **options)
    outcomes: dict[str, int] = {}
    for mutated in mutations(data, 150, seed=len(fmt)):
        try:
            result = decode_image(mutated, LIMITS)
        except ApiError as error:
            outcomes[error.code] = outcomes.get(error.code, 0) + 1
        else:
            assert result.pixels.ndim == 3 and result.pixels.shape[2] == 3
            outcomes["decoded"] = outcomes.get("decoded", 0) + 1
    assert sum(outcomes.values()) == 150 and len(outcomes) > 1


# --- the process pool ----------------------------------------------------------------------

BUDGET_S = 0.25
# 800k empty chunks before the pixels: about 2 s of Pillow's header parsing, in under 10 MiB.
SLOW_PNG = handmade_png(1, 1, zlib.compress(b"\x00" * 4), filler_chunks=800_000)
SMALL_PNG = encode(chelsea((64, 48)), "PNG")


@pytest.fixture(scope="module")
def pool() -> Iterator[Decoder]:
    decoder = Decoder(LIMITS.model_copy(update={"decode_timeout_s": BUDGET_S}), workers=2)
    decoder.warm_up()
    yield decoder
    decoder.close()


def test_api_error_survives_pickling() -> None:
    error = ApiError("too_many_frames", "image has 200 frames", param="input[1]")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ApiError)
    assert (copy.code, copy.message, copy.param) == ("too_many_frames", *error.args, "input[1]")


async def test_decode_in_the_pool(pool: Decoder) -> None:
    decoded = await pool.decode(encode(chelsea((1600, 1200)), "JPEG"), working_side=224)
    assert decoded.format == "jpeg"
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert decoded.pixels.shape == (224, 299, 3)


async def test_refusals_from_the_worker_keep_their_code(pool: Decoder) -> None:
    for data, code in [
        (b"plain text", "invalid_image"),
        (encode(chelsea(), "TIFF"), "unsupported_media_type"),
        (handmade_gif(150), "too_many_frames"),
    ]:
        with pytest.raises(ApiError) as caught:
            await pool.decode(data)
        assert caught.value.code == code


async def test_a_slow_decode_times_out_while_others_are_served(pool: Decoder) -> None:
    started = time.perf_counter()
    slow = asyncio.create_task(pool.decode(SLOW_PNG))
    fast = await pool.decode(SMALL_PNG)
    assert fast.width == 64
    assert not slow.done()  # the fast one did not queue behind the slow one
    with pytest.raises(ApiError) as caught:
        await slow
    assert caught.value.code == "image_decode_timeout"
    assert time.perf_counter() - started < 1.5  # killed near its budget, not after 2 s of work
    # The killed worker is being replaced; the pool goes on serving meanwhile and afterwards.
    for _ in range(3):
        assert (await pool.decode(SMALL_PNG)).format == "png"


async def test_a_crashed_worker_is_an_invalid_image(pool: Decoder) -> None:
    with pytest.raises(ApiError) as caught:
        await pool.run(os._exit, 3)
    assert caught.value.code == "invalid_image"
    assert (await pool.decode(SMALL_PNG)).format == "png"


async def test_a_worker_that_dies_while_idle_is_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = Decoder(LIMITS, workers=1)
    try:
        decoder.warm_up()
        os.kill(await decoder.run(os.getpid), signal.SIGKILL)
        await asyncio.sleep(0.2)  # dead and reaped before the next task is handed out
        assert (await decoder.decode(SMALL_PNG)).format == "png"
        assert "died while idle" in caplog.text
    finally:
        decoder.close()


async def test_a_closed_decoder_refuses_work() -> None:
    decoder = Decoder(LIMITS, workers=1)
    decoder.close()
    with pytest.raises(RuntimeError):
        await decoder.decode(SMALL_PNG)

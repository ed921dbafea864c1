"""Test helper: small real images in every decodable format plus a few odd but valid ones, the
seeds that the property test damages and the decode fuzzer starts from."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image

from support.samples import photo_jpeg

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
_PHOTOS = ("chelsea", "coffee", "astronaut")


@cache
def photos(fmt: str, count: int = 1, size: tuple[int, int] = (96, 72)) -> tuple[bytes, ...]:
    """`count` (at most 3) distinct real photos, `size` pixels, in `fmt` (a Pillow format)."""
    return tuple(
        _save(Image.open(io.BytesIO(photo_jpeg(name, size=size))).convert("RGB"), fmt)
        for name in _PHOTOS[:count]
    )


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@cache
def image_seeds() -> dict[str, bytes]:
    """Name -> bytes: one small photo per format, and the odd cases the decoder treats apart (an
    EXIF-rotated JPEG, a transparent PNG, an animated GIF, a 16-bit grey PNG, a palette PNG)."""
    seeds = {fmt.lower(): photos(fmt, size=(40, 30))[0] for fmt in FORMATS}
    photo = Image.open(io.BytesIO(seeds["png"])).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the decoder transposes it
    seeds["jpeg_rotated"] = _save(photo, "JPEG", exif=exif.tobytes())
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    seeds["png_alpha"] = _save(rgba, "PNG")
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    seeds["gif_animated"] = _save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    grey = np.linspace(0, 65535, 40 * 30, dtype=np.uint16).reshape(30, 40)
    seeds["png_grey16"] = _save(Image.fromarray(grey), "PNG")
    seeds["png_palette"] = _save(photo.convert("P"), "PNG")
    return seeds

"""Real test images made in memory: scikit-image's sample photos and synthetic files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def photo_jpeg(
    name: str = "chelsea", quality: int = 90, size: tuple[int, int] | None = None
) -> bytes:
    """A real photo from scikit-image, as JPEG bytes."""
    from skimage import data

    pixels = getattr(data, name)()
    image = Image.fromarray(np.asarray(pixels)).convert("RGB")
    if size is not None:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    """An incompressible PNG of the given size (large files that are still valid images)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def deep_png(width: int, height: int, depth: int = 16, colour: int = 6, channels: int = 4) -> bytes:
    """A PNG of zero samples at any bit depth and colour type (default 16-bit RGBA, which
    Pillow cannot write), compressed by hand: 6300x6300 is about 300 KB that decodes slowly."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    row = bytes(1 + (width * channels * depth + 7) // 8)  # filter type 0, then the samples
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# Distinct real photographs bundled in scikit-image's wheel (no download), plus scikit-learn's
# two sample photos where it is installed. `cat` is left out: it is the same photo as `chelsea`.
PHOTO_NAMES = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "rocket",
    "motorcycle_left",
    "retina",
    "moon",
    "clock",
    "page",
    "brick",
    "grass",
    "gravel",
)
SKLEARN_PHOTO_NAMES = ("china", "flower")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def sample_photo(name: str) -> np.ndarray:
    """One named real photo as HxWx3 uint8 RGB (a scikit-image name, or `china`/`flower`)."""
    if name in SKLEARN_PHOTO_NAMES:
        from sklearn.datasets import load_sample_image

        return _as_rgb(load_sample_image(f"{name}.jpg"))
    from skimage import data

    if name == "motorcycle_left":  # stereo_motorcycle() is (left, right, disparity)
        return _as_rgb(data.stereo_motorcycle()[0])
    return _as_rgb(getattr(data, name)())


def sample_photos(limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Distinct real photos as (name, HxWx3 uint8 RGB): 16 from scikit-image, +2 with sklearn."""
    names = list(PHOTO_NAMES)
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        pass
    else:
        names.extend(SKLEARN_PHOTO_NAMES)
    return [(name, sample_photo(name)) for name in names[:limit]]


def encode(rgb: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    """HxWx3 uint8 RGB encoded in memory with Pillow (`fmt` a Pillow format name)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def watermarked(rgb: np.ndarray, text: str = "© Dupify Stock") -> np.ndarray:
    """The photo with a stock-photo style watermark: large, half-opaque white TrueType text with
    a dark outline across the centre, about 70% of the width (Pillow's bundled font)."""
    from PIL import ImageDraw, ImageFont

    base = Image.fromarray(np.ascontiguousarray(rgb)).convert("RGBA")
    size = max(8, base.width // 10)
    font = ImageFont.load_default(size=size)
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=2)
    scale = 0.7 * base.width / max(1, right - left)
    font = ImageFont.load_default(size=max(8, round(size * scale)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=2)
    origin = ((base.width - (right - left)) / 2 - left, (base.height - (bottom - top)) / 2 - top)
    draw.text(
        origin,
        text,
        font=font,
        fill=(255, 255, 255, 128),
        stroke_width=2,
        stroke_fill=(0, 0, 0, 128),
    )
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB"))


def altered_copies(rgb: np.ndarray) -> dict[str, bytes]:
    """Encoded copies of one photo, as a user's folder would hold them.

    `png` and `webp_lossless` carry exactly the original pixels (different bytes, same pixels:
    exact duplicates of each other). The others are near duplicates of the photo, each saved as
    JPEG quality 90 like a typical re-shared copy unless the alteration is the encoding itself:
    `resized_50` (half each side, Lanczos), `cropped_80` (the central 80% of each side),
    `jpeg_q30` (recompressed at quality 30), `watermarked` (see `watermarked`), `flipped`
    (mirrored left to right).
    """
    image = Image.fromarray(np.ascontiguousarray(rgb))
    height, width = rgb.shape[:2]
    half = image.resize((max(1, width // 2), max(1, height // 2)), Image.Resampling.LANCZOS)
    dy, dx = round(height * 0.1), round(width * 0.1)
    return {
        "png": encode(rgb, "PNG"),
        "webp_lossless": encode(rgb, "WEBP", lossless=True),
        "resized_50": encode(np.asarray(half), "JPEG", quality=90),
        "cropped_80": encode(rgb[dy : height - dy, dx : width - dx], "JPEG", quality=90),
        "jpeg_q30": encode(rgb, "JPEG", quality=30),
        "watermarked": encode(watermarked(rgb), "JPEG", quality=90),
        "flipped": encode(rgb[:, ::-1], "JPEG", quality=90),
    }


def in_screenshot(rgb: np.ndarray) -> np.ndarray:
    """A phone-style page drawn with Pillow (status bar, title, text lines, buttons) with the
    photo shrunk into its middle: what AugLy's screenshot overlay does with its templates."""
    page = Image.new("RGB", (540, 960), (245, 245, 245))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 540, 48), fill=(30, 30, 30))
    draw.rectangle((0, 48, 540, 140), fill=(59, 89, 152))
    draw.text((24, 80), "Photos shared with you", fill=(255, 255, 255))
    for row in range(6):
        top = 700 + row * 34
        draw.rectangle((24, top, 24 + 420 - 40 * (row % 3), top + 14), fill=(200, 200, 200))
    for left in (24, 196, 368):
        draw.rounded_rectangle((left, 900, left + 148, 944), radius=12, fill=(59, 89, 152))
    photo = Image.fromarray(rgb).resize((492, 520), Image.Resampling.BILINEAR)
    page.paste(photo, (24, 160))
    return np.asarray(page)

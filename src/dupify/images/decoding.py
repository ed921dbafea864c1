"""The image decoding policy: sniff, check header caps, decode one reduced RGB frame."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from io import BytesIO

import numpy as np
import numpy.typing as npt
from PIL import Image

from dupify.config import ImageLimits
from dupify.errors import ApiError

# Lowercase public name -> (label for messages, the Pillow plugins allowed to open it).
# MPO is how Pillow opens a JPEG that carries a multi-picture index; its primary image is a JPEG.
_DECODABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "jpeg": ("JPEG", ("JPEG", "MPO")),
    "png": ("PNG", ("PNG",)),
    "gif": ("GIF", ("GIF",)),
    "webp": ("WebP", ("WEBP",)),
    "bmp": ("BMP", ("BMP",)),
}

# Signatures of formats we recognise but never decode, so the client hears 415 rather than 422.
_REFUSED_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"qoif", "QOI"),
    (b"v/1\x01", "OpenEXR"),
    (b"DDS ", "DDS"),
)

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

# EXIF Orientation value -> the transpose that makes the image upright. Applied by hand rather
# than with ImageOps.exif_transpose, which also rewrites the EXIF bytes: that can raise on
# damaged metadata and would fail an otherwise good photo.
_UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
_EXIF_GPS_IFD = 0x8825
_SIXTEEN_BIT_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """The first frame of an upload as a reduced RGB working image, plus what its header said.

    `pixels` is HxWx3 uint8 RGB, C-contiguous: EXIF orientation applied, alpha composited on
    white, and reduced (JPEG DCT scaling, then a resize keeping the aspect ratio) so that the
    shorter side is at most the requested `working_side`; never upscaled.

    `width` and `height` are the original dimensions, after EXIF orientation.

    `pixel_sha256` is the hex SHA-256 of `f"{width},{height}\\n"` (ASCII) followed by the RGB
    bytes, row-major, of the full-resolution first frame after orientation and compositing.
    It is only computed when that frame was decoded at full resolution; a JPEG decoded through
    DCT scaling (large photos) has "" here, because its full-resolution pixels never existed.
    """

    pixels: npt.NDArray[np.uint8]
    width: int
    height: int
    format: str
    mode: str
    animated: bool
    frames: int
    exif_gps_present: bool
    pixel_sha256: str


def decode_image(data: bytes, limits: ImageLimits, working_side: int = 512) -> DecodedImage:
    """Apply the decoding policy (API.md section 2) to one upload held in memory.

    Every refusal and every decoder failure is an `ApiError`; no other exception escapes for
    any input bytes. `working_side` (positive) is the shorter side the caller needs.
    """
    if working_side < 1:
        raise ValueError(f"working_side must be positive, got {working_side}")
    fmt = _accepted_format(data, limits)
    label, plugins = _DECODABLE[fmt]
    try:
        return _decode(data, fmt, plugins, limits, working_side)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own bomb check runs inside Image.open, before ours: its error (and its
        # warning, where warnings are errors) means the header is over our caps as well.
        raise ApiError(
            "image_too_large", f"image is over the limit of {limits.max_pixels} pixels"
        ) from exc
    except Exception as exc:
        # Corrupt input surfaces as almost any exception type from the codecs and plugins.
        raise ApiError(
            "invalid_image", f"the {label} data could not be decoded (corrupt or truncated)"
        ) from exc


def _accepted_format(data: bytes, limits: ImageLimits) -> str:
    """The lowercase name of an allowed, decodable format, or the ApiError refusing the bytes."""
    if not data:
        raise ApiError("invalid_image", "empty image")
    if len(data) > limits.max_image_bytes:
        raise ApiError(
            "payload_too_large",
            f"image is {len(data)} bytes; the limit is {limits.max_image_bytes} bytes",
        )
    sniffed = sniff_format(data)
    accepted = sorted(_DECODABLE[f][0] for f in limits.allowed_formats if f in _DECODABLE)
    if sniffed is None:
        raise ApiError(
            "invalid_image", f"not a recognised image; send one of: {', '.join(accepted)}"
        )
    if sniffed in _DECODABLE and sniffed in limits.allowed_formats:
        return sniffed
    label = _DECODABLE[sniffed][0] if sniffed in _DECODABLE else sniffed
    raise ApiError(
        "unsupported_media_type",
        f"{label} images are not accepted; send one of: {', '.join(accepted)}",
    )


def sniff_format(data: bytes) -> str | None:
    """The format the magic bytes announce: a `_DECODABLE` key, another format's label, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    for prefix, label in _REFUSED_PREFIXES:
        if data.startswith(prefix):
            return label
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC/HEIF"
        if brand in _AVIF_BRANDS:
            return "AVIF"
        return "ISO media"
    return _sniff_markup(data)


def _sniff_markup(data: bytes) -> str | None:
    """SVG (or other XML) text: refused as a format; any other text is simply not an image."""
    head = data[:4096].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if not head.startswith(b"<"):
        return None
    if b"<svg" in head:
        return "SVG"
    if head.startswith(b"<?xml"):
        return "XML"
    return None


def _decode(
    data: bytes, fmt: str, plugins: tuple[str, ...], limits: ImageLimits, working_side: int
) -> DecodedImage:
    with Image.open(BytesIO(data), formats=list(plugins)) as img:
        width, height = img.size
        _check_size(width, height, limits)
        mode = img.mode
        # An MPO's extra pictures (previews, depth maps) are not animation frames.
        frames = 1 if fmt == "jpeg" else int(getattr(img, "n_frames", 1))
        if frames > limits.max_frames:
            raise ApiError(
                "too_many_frames",
                f"image has {frames} frames; the limit is {limits.max_frames}",
            )
        img.seek(0)
        if fmt == "jpeg":
            img.draft("RGB", (working_side, working_side))
        full_resolution = img.size == (width, height)
        img.load()
        orientation, gps_present = _read_exif(img)
        frame: Image.Image = img
        if orientation in _UPRIGHT:
            frame = frame.transpose(_UPRIGHT[orientation])
            if orientation in _SWAPS_AXES:
                width, height = height, width
        rgb = _to_rgb(frame)
        digest = _pixel_sha256(rgb, width, height) if full_resolution else ""
        pixels = np.array(_reduce(rgb, working_side), dtype=np.uint8, order="C")
    return DecodedImage(
        pixels=pixels,
        width=width,
        height=height,
        format=fmt,
        mode=mode,
        animated=frames > 1,
        frames=frames,
        exif_gps_present=gps_present,
        pixel_sha256=digest,
    )


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise ApiError("invalid_image", f"image header declares an empty size {width}x{height}")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise ApiError(
            "image_too_large",
            f"image is {width}x{height} pixels; the limits are {limits.max_side} pixels "
            f"per side and {limits.max_pixels} pixels in all",
        )


def _read_exif(img: Image.Image) -> tuple[int, bool]:
    """(EXIF orientation, whether a GPS IFD has entries); bad metadata never fails an image."""
    try:
        exif = img.getexif()
        orientation = exif.get(_EXIF_ORIENTATION, 1)
    except Exception:
        return 1, False
    try:
        gps_present = len(exif.get_ifd(_EXIF_GPS_IFD)) > 0
    except Exception:
        gps_present = False
    return (orientation if isinstance(orientation, int) else 1), gps_present


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _SIXTEEN_BIT_GREY:
        # Pillow's own I;16 -> RGB conversion clips at 255 instead of scaling.
        high_bytes = np.right_shift(np.clip(np.asarray(img), 0, 65535), 8).astype(np.uint8)
        img = Image.fromarray(high_bytes)
    if img.mode == "RGB":
        return img
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGB", rgba.size, _WHITE)
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return img.convert("RGB")


def _pixel_sha256(rgb: Image.Image, width: int, height: int) -> str:
    digest = hashlib.sha256(f"{width},{height}\n".encode("ascii"))
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def _reduce(rgb: Image.Image, working_side: int) -> Image.Image:
    width, height = rgb.size
    shorter = min(width, height)
    if shorter <= working_side:
        return rgb
    if width <= height:
        size = (working_side, max(1, round(height * working_side / shorter)))
    else:
        size = (max(1, round(width * working_side / shorter)), working_side)
    # reducing_gap lets Pillow box-reduce by an integer factor first: much faster, same quality.
    return rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)

"""What decoding an upload will cost, read from its header before any pixel is decoded.

The cost is in bytes: the pixels the decoder will produce times (the file's bytes per pixel,
which its codec inflates and unfilters, plus the 8 bytes a pixel of the two full-size images
Pillow holds, the decoded frame and its RGB conversion). Measured on every accepted format, the
CPU time of a decode is about 1 to 2 ns a cost byte and its peak resident memory at most 1.4
times its cost (docs/operations.md, "Decode budgets and the fair queue"), so a small file of
large, deep pixels costs what it really costs and a JPEG that is decoded at reduced scale little.
"""

from __future__ import annotations

import struct

from dupify.config import ImageLimits
from dupify.images.decoding import sniff_format

# The decoded frame and its RGB conversion: Pillow keeps both in up to 4 bytes a pixel.
WORKING_BYTES_PER_PIXEL = 8
# The most file bytes a pixel takes in an accepted format: 16-bit RGBA PNG, and WebP.
DEEPEST_PIXEL_BYTES = 8
# A JPEG's SOF segment normally follows a few APPn segments; past this many, the header is
# treated as unreadable (and costed as the worst case) rather than walked in the event loop.
_JPEG_MAX_SEGMENTS = 256
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD9)})
# Bytes a pixel per PNG colour type at 8 bits a sample (grey, RGB, palette, grey+alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# libwebp decodes every kind of WebP into a 4-byte RGBA buffer of its own, which Pillow copies.
_WEBP_PIXEL_BYTES = 8
# The smallest cost: an upload refused on its magic bytes or header caps, without decoding.
_REFUSAL_COST = 1


def worst_cost(limits: ImageLimits) -> int:
    """What an unreadable header is charged: `max_pixels` of the deepest pixels accepted."""
    return limits.max_pixels * (DEEPEST_PIXEL_BYTES + WORKING_BYTES_PER_PIXEL)


def decode_cost(data: bytes, limits: ImageLimits, working_side: int) -> int:
    """The estimated cost in bytes of `decode_image(data, limits, working_side)`.

    An upload in an accepted format whose header cannot be read costs `worst_cost`: guessing
    low would let it slip past the budgets, and a real image's header always reads. Anything
    the decoder refuses before decoding pixels (format, size caps) costs next to nothing.
    """
    fmt = sniff_format(data) if 0 < len(data) <= limits.max_image_bytes else None
    if fmt not in limits.allowed_formats:
        return _REFUSAL_COST
    header = _read_header(fmt, data, working_side)
    if header is None:
        return worst_cost(limits)
    width, height, cost = header
    if width < 1 or height < 1:
        return _REFUSAL_COST
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        return _REFUSAL_COST
    return cost


# (width, height, cost) as the header says, or None where it cannot be read.
_Header = tuple[int, int, int]


def _pixels(width: int, height: int, pixel_bytes: int) -> _Header:
    return width, height, width * height * (pixel_bytes + WORKING_BYTES_PER_PIXEL)


def _read_header(fmt: str, data: bytes, working_side: int) -> _Header | None:
    try:
        if fmt == "png":
            return _png(data)
        if fmt == "gif":
            width, height = struct.unpack_from("<HH", data, 6)  # the logical screen
            return _pixels(width, height, 1)
        if fmt == "bmp":
            return _bmp(data)
        if fmt == "webp":
            return _webp(data)
        return _jpeg(data, working_side)
    except struct.error:  # shorter than its header says
        return None


def _png(data: bytes) -> _Header | None:
    if data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    if colour not in _PNG_CHANNELS:
        return None
    return _pixels(width, height, _PNG_CHANNELS[colour] * (2 if depth == 16 else 1))


def _bmp(data: bytes) -> _Header:
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 1.x: 16-bit sides
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
    else:
        width, height, _, bits = struct.unpack_from("<iiHH", data, 18)
    return _pixels(width, abs(height), max(1, bits // 8))


def _webp(data: bytes) -> _Header | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack_from("<HH", data, 26)
        return _pixels(width & 0x3FFF, height & 0x3FFF, _WEBP_PIXEL_BYTES)
    if chunk == b"VP8L":
        (bits,) = struct.unpack_from("<I", data, 21)
        return _pixels((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, _WEBP_PIXEL_BYTES)
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _pixels(width, height, _WEBP_PIXEL_BYTES)
    return None


def _jpeg(data: bytes, working_side: int) -> _Header | None:
    """The frame header's size. The cost: the pixels at the size Pillow's DCT scaling decodes
    (as decode_image's `draft` picks it), plus the entropy decoding of every coefficient of the
    full image: about a byte per 8 samples for a baseline JPEG, and for a progressive one the
    2-byte coefficient of every sample, which it keeps for the whole image."""
    position = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        while position < len(data) and data[position] == 0xFF:
            position += 1  # fill bytes before a marker
        if position >= len(data):
            return None
        marker = data[position]
        position += 1
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker == 0xDA:  # scan data before any frame header
            return None
        if marker in _JPEG_SOF:
            precision, height, width, components = struct.unpack_from(">BHHB", data, position + 2)
            samples = width * height * components * (2 if precision > 8 else 1)
            coefficients = samples * 2 if marker in _JPEG_PROGRESSIVE else samples // 8
            scale = _dct_scale(width, height, working_side)
            decoded = _pixels(-(-width // scale), -(-height // scale), components)[2]
            return width, height, decoded + coefficients
        (length,) = struct.unpack_from(">H", data, position)
        position += length
        if position < len(data) and data[position] != 0xFF:
            return None  # not a marker where the segment's length says one starts
    return None


def _dct_scale(width: int, height: int, working_side: int) -> int:
    """The reduction Pillow's JpegImageFile.draft picks for a (side, side) request."""
    fits = min(width // working_side, height // working_side)
    return next((scale for scale in (8, 4, 2) if fits >= scale), 1)

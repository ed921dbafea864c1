"""Content hashes: SHA-256 of the bytes, and the 64-bit perceptual pHash and dHash of the pixels.

pHash and dHash follow the standard definitions exactly as the `imagehash` library (4.x)
computes them, so their hex strings can be compared with hashes made elsewhere:

- both start from Pillow's `convert("L")` (ITU-R 601-2 luma) and a Lanczos resize
  (`imagehash.ANTIALIAS`), the same filter whatever the input size, so a resized copy of a
  photo hashes to (almost) the same bits;
- pHash: 32x32 grey, a 2-D DCT-II, the top-left 8x8 block of coefficients (DC term included),
  each bit = coefficient > the median of those 64 values;
- dHash: 9x8 grey (width 9), each bit = pixel > its left neighbour;
- hex: the 64 bits row-major, first bit most significant, as 16 lowercase hex digits.

The Hamming distance between two hashes counts the differing bits (0 = same, 64 = opposite).
pHash survives resizing, recompression and small edits; dHash is cheaper and catches the same
kinds of copies a little less reliably. Neither survives a flip or a large crop: the embedding
tier of `similarity.py` covers those.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt
from PIL import Image

from dupify.analysis.pixels import require_rgb

HASH_BITS = 64
_HASH_SIDE = 8
_PHASH_SIDE = _HASH_SIDE * 4  # imagehash's highfreq_factor 4


def _dct_matrix(size: int) -> npt.NDArray[np.float64]:
    """The unnormalised DCT-II matrix (scipy.fftpack.dct's default): C @ x is the DCT of x."""
    k = np.arange(size, dtype=np.float64)[:, None]
    n = np.arange(size, dtype=np.float64)[None, :]
    return 2.0 * np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * size))


# Only the first 8 rows are ever used: the low-frequency coefficients.
_PHASH_DCT = _dct_matrix(_PHASH_SIDE)[:_HASH_SIDE]


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of the uploaded bytes: equal only for byte-identical files."""
    return hashlib.sha256(data).hexdigest()


def _grey(pixels: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.float64]:
    require_rgb(pixels)
    image = Image.fromarray(np.ascontiguousarray(pixels)).convert("L")
    small = image.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float64)


def _bits_to_hex(bits: npt.NDArray[np.bool_]) -> str:
    value = 0
    for bit in bits.ravel():
        value = (value << 1) | int(bit)
    return f"{value:0{bits.size // 4}x}"


def phash(pixels: npt.NDArray[np.uint8]) -> str:
    """64-bit DCT perceptual hash of HxWx3 uint8 RGB pixels, as 16 hex digits."""
    grey = _grey(pixels, _PHASH_SIDE, _PHASH_SIDE)
    low = _PHASH_DCT @ grey @ _PHASH_DCT.T  # rows then columns, top-left 8x8 only
    return _bits_to_hex(low > np.median(low))


def dhash(pixels: npt.NDArray[np.uint8]) -> str:
    """64-bit horizontal difference hash of HxWx3 uint8 RGB pixels, as 16 hex digits."""
    grey = _grey(pixels, _HASH_SIDE + 1, _HASH_SIDE)
    return _bits_to_hex(grey[:, 1:] > grey[:, :-1])


def hamming(a_hex: str, b_hex: str) -> int:
    """Number of differing bits between two equal-length hex hashes."""
    if len(a_hex) != len(b_hex):
        raise ValueError(f"hashes differ in length: {len(a_hex)} and {len(b_hex)} hex digits")
    try:
        return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()
    except ValueError as exc:
        raise ValueError(f"not hex hashes: {a_hex!r}, {b_hex!r}") from exc

"""The API key format: `dpy_` + 32 base62 random characters + a 6-character base62 CRC32 checksum.

The checksum lets a secret scanner (or this server, before any lookup) tell a real key from a
typo offline; the random part carries ~190 bits from `secrets`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib

PREFIX = "dpy_"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
DISPLAY_LENGTH = 8
BASE62 = string.digits + string.ascii_letters
KEY_PATTERN = re.compile(
    rf"^{PREFIX}[0-9A-Za-z]{{{RANDOM_LENGTH}}}[0-9A-Za-z]{{{CHECKSUM_LENGTH}}}$"
)


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits)).rjust(width, BASE62[0])


def checksum(body: str) -> str:
    """Base62 CRC32 of everything before the checksum (`dpy_` and the random part)."""
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate_key() -> str:
    body = PREFIX + "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return body + checksum(body)


def is_well_formed(key: str) -> bool:
    """Format and checksum, checked offline: a typo is rejected before any database lookup."""
    if not KEY_PATTERN.match(key):
        return False
    body, check = key[:-CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    return hmac.compare_digest(checksum(body), check)


def display_prefix(key: str) -> str:
    """The first characters after `dpy_`: enough to recognise a key, useless to guess it."""
    return key[len(PREFIX) : len(PREFIX) + DISPLAY_LENGTH]


def hash_key(key: str, secret: bytes) -> str:
    """HMAC-SHA256 with the server secret: a stolen database cannot be brute-forced offline."""
    return hmac.new(secret, key.encode("ascii"), hashlib.sha256).hexdigest()

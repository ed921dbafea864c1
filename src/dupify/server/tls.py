"""TLS for `dupify serve --tls-cert/--tls-key`: TLS 1.3 only (PRIVACY row 11)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any


def tls13_only_context(
    config: Any, default_factory: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: its own context (certificate, key, ALPN), refusing every
    protocol version below TLS 1.3. A module-level function, so worker processes can import it."""
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    return context

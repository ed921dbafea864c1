"""The server secret that keys the API-key HMAC: from settings, or a generated file in dev."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from dupify.config import Settings


def server_secret(settings: Settings) -> bytes:
    """The configured secret; outside production, one generated once and kept beside the database.

    Production refuses to start without DUPIFY_SECRET_KEY (see `Settings`), so the file is only a
    development convenience: without it every restart would invalidate every key.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = Path(settings.secret_key_file)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()

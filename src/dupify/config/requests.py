"""Settings for what a request may bring: image caps, images by URL, the HTTP server's limits."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from dupify.config.common import MiB

# Images per request of /v1/analyze and /v1/duplicates: fixed by the API contract (API.md
# sections 4 and 5), not settings. /v1/embeddings' is `ImageLimits.max_images_embeddings`.
MAX_ANALYZE_IMAGES = 16
MAX_DUPLICATES_IMAGES = 64


class ImageLimits(BaseModel):
    """Caps applied to every uploaded image, all checked before pixels are decoded."""

    max_body_bytes: int = Field(20 * MiB, gt=0)
    max_image_bytes: int = Field(10 * MiB, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    max_side: int = Field(12_000, gt=0)
    max_frames: int = Field(100, gt=0)
    decode_timeout_s: float = Field(2.0, gt=0)
    allowed_formats: frozenset[str] = frozenset({"jpeg", "png", "webp", "gif", "bmp"})
    max_images_embeddings: int = Field(32, gt=0)
    # Decode budgets, in the decode cost that dupify.images.cost reads from each header
    # (docs/operations.md, "Decode budgets and the fair queue").
    max_request_decode_bytes: int = Field(
        2048 * MiB, gt=0, description="one request's images together; over it, 422"
    )
    max_decoding_bytes: int = Field(
        768 * MiB, gt=0, description="decodes running at once in one process: the memory bound"
    )
    account_decode_cpu_s_per_minute: float = Field(
        60.0, gt=0, description="decoder CPU seconds per account per process; past it, 429"
    )


class ImageUrlSettings(BaseModel):
    """Images given by URL (dupify.images.fetch): what the SSRF guard lets through, and its caps."""

    enabled: bool = True
    # Hosts (`images.internal`), wildcards (`*.cdn.internal`) and CIDRs (`10.20.0.0/16`) fetched
    # even in a refused address range and on any port; `deny` entries are refused whatever else.
    allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    deny: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_http: bool = False
    ports: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [443, 80])
    max_redirects: int = Field(3, ge=0, le=10)
    connect_timeout_s: float = Field(3.0, gt=0)
    timeout_s: float = Field(10.0, gt=0, description="one URL, redirects and body included")
    per_request: int = Field(8, gt=0, description="URLs of one request fetched at once")
    per_process: int = Field(32, gt=0, description="URLs fetched at once by one process")

    @field_validator("allow", "deny", "ports", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # DUPIFY_IMAGE_URLS__ALLOW=127.0.0.1,*.internal reads as a list; JSON lists work too.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value


class ServerSettings(BaseModel):
    """What `dupify serve` takes from a client before the app sees a request (server.http)."""

    max_header_bytes: int = Field(32 * 1024, gt=0, description="request line and header fields")
    max_headers: int = Field(100, gt=0)
    header_timeout_s: float = Field(
        20.0, gt=0, description="from the connection (or a request's first byte) to its blank line"
    )
    # A body must progress by body_min_rate bytes per second (at least one byte) in every window
    # of body_timeout_s; the time the app leaves it unread does not count against the client.
    body_timeout_s: float = Field(20.0, gt=0)
    body_min_rate: int = Field(500, ge=0, description="bytes per second; 0 = any progress")
    # The memory bound under many concurrent uploads (dupify.images.bodies, docs/operations.md).
    body_room_bytes: int = Field(
        256 * MiB, gt=0, description="request bodies one process holds at once; more wait"
    )
    body_room_wait_s: float = Field(
        10.0, ge=0, description="how long a body waits for room before 503 overloaded"
    )

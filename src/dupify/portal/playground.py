"""The playground's work: one or two uploaded images through the API's own analysis pipeline.

The images go through `runtime.pipeline` (what `/v1/analyze` and `/v1/compare` run), are billed
to the account's monthly quota by the process's `Meter` (what the API calls) and leave one
request-log row, so they count in the quota, the dashboard and the logs exactly like API calls:
the analysis bills one image per image, the comparison two more, as the two API calls would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dupify.accounts.models import Account
from dupify.analysis.similarity import DEFAULT_THRESHOLDS, compare
from dupify.context import RequestContext
from dupify.db import utcnow
from dupify.errors import ApiError
from dupify.inference.registry import EMBEDDING_ROLE
from dupify.pipeline.features import DEFAULT_FEATURES, AnalysisOptions, models_for
from dupify.server.runtime import Runtime
from dupify.usage.recorder import RequestRecord

ENDPOINT = "POST /playground"
# What the API answers by default, plus the boxes the page draws over the image.
PLAYGROUND_FEATURES = DEFAULT_FEATURES | {"faces", "text"}


@dataclass(frozen=True)
class ImageOutcome:
    name: str
    result: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class PlaygroundOutcome:
    images: list[ImageOutcome]
    comparison: dict[str, Any] | None


# What each tier of `dupify.analysis.similarity` means, for people.
TIER_WORDS = {
    "exact_bytes": "tier 1, exact bytes: the same file",
    "exact_pixels": "tier 1, exact pixels: the same decoded pixels in another file",
    "perceptual_hash": "tier 2, perceptual hash: pHash and dHash within their distances, the "
    "descriptors at least similar",
    "descriptor": "tier 3, descriptor: the cosine of the two copy-detection descriptors",
}


def deciding_tier(comparison: dict[str, Any]) -> str:
    """Which tier of `dupify.analysis.similarity` decided the verdict, in words."""
    return TIER_WORDS[comparison["tier"]]


async def analyse_uploads(
    ctx: RequestContext, runtime: Runtime, account: Account, uploads: list[tuple[str, bytes]]
) -> PlaygroundOutcome:
    """Analyse each upload; with two, compare them. Raises ApiError (e.g. quota_exceeded).

    `ctx` is the portal request's context; the signed-in account becomes its caller (no key).
    """
    started = time.perf_counter()
    ctx.identify(account_id=account.id, key_id=None, plan=account.plan)
    wants_comparison = len(uploads) == 2
    status, error_code = 200, None
    options: AnalysisOptions | None = None
    try:
        await runtime.meter.charge(ctx, len(uploads) + (2 if wants_comparison else 0))
        options = AnalysisOptions(
            features=PLAYGROUND_FEATURES, embedding_model=runtime.registry.roles[EMBEDDING_ROLE]
        )
        outcomes = await runtime.pipeline.analyze(
            [data for _, data in uploads], options, account=account.id
        )
        images = [
            ImageOutcome(name, None, outcome.message)
            if isinstance(outcome, ApiError)
            else ImageOutcome(name, outcome, None)
            for (name, _), outcome in zip(uploads, outcomes, strict=True)
        ]
        comparison = None
        analysed = sum(1 for image in images if image.result is not None)
        if wants_comparison and analysed == 2:
            first, second = await runtime.pipeline.fingerprints_all(
                [data for _, data in uploads], ["a", "b"], account=account.id
            )
            comparison = compare(first, second, DEFAULT_THRESHOLDS)
            comparison["tier"] = deciding_tier(comparison)
        await runtime.meter.settle(ctx, analysed + (2 if comparison is not None else 0))
        return PlaygroundOutcome(images, comparison)
    except ApiError as exc:
        status, error_code = exc.status, exc.code
        await runtime.meter.settle(ctx, 0)
        raise
    except BaseException:
        status, error_code = 500, "internal_error"
        await runtime.meter.settle(ctx, 0)
        raise
    finally:
        runtime.recorder.record(
            RequestRecord(
                request_id=ctx.request_id,
                created_at=utcnow(),
                account_id=account.id,
                key_id=None,
                endpoint=ENDPOINT,
                status=status,
                error_code=error_code,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
                images=ctx.images if status == 200 else 0,
                cached_images=0,
                bytes_in=sum(len(data) for _, data in uploads),
                model="+".join(models_for(runtime.registry, options)) if options else None,
            )
        )

"""The safety verdict for open-nsfw's probability that an image is not safe for work.

Thresholds follow the guidance published with Yahoo's open_nsfw model: below 0.2 an image is
"likely safe with high probability", above 0.8 "highly probable to be NSFW", and the middle
range is left to the application. Dupify names that middle range `questionable`:

- `safe`: p < 0.2
- `questionable`: 0.2 <= p < 0.8
- `unsafe`: p >= 0.8
"""

from __future__ import annotations

import math

SAFE_BELOW = 0.2
UNSAFE_FROM = 0.8


def safety_verdict(nsfw_probability: float) -> dict[str, object]:
    """`{"nsfw": p, "verdict": "safe" | "questionable" | "unsafe"}` for a probability in [0, 1]."""
    p = float(nsfw_probability)
    if not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"nsfw probability must be within [0, 1], got {nsfw_probability!r}")
    if p < SAFE_BELOW:
        verdict = "safe"
    elif p < UNSAFE_FROM:
        verdict = "questionable"
    else:
        verdict = "unsafe"
    return {"nsfw": p, "verdict": verdict}

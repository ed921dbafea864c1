"""The benchmark's (edited, edited) rows: different photos framed in one page are no copies.

The main table pairs edited queries with clean references, so it never asks the verdict about
two edited images that share an overlay. Here each of the first `count` reference photos is
framed three ways (a page drawn here with Pillow, in the manner of a phone feed post, and
AugLy's own `web.png` and `mobile.png` screenshot templates, photo scaled in, no crop) and,
for each frame, every pair of two different framed photos is judged by `compare`, as are the
framed photos against their own clean reference. A good verdict calls the first kind
`near_duplicate` never and the second as often as it can. "descriptor alone" is the verdict
without the shared-frame check (dupify.analysis.frames), so the row shows what the check does.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import augly.image as imaugs
from copy_methods import encode
from copy_queries import SCREENSHOT_TEMPLATES
from PIL import Image, ImageDraw

from dupify.analysis import similarity as sim
from dupify.inference.models.base import ImageModel

Frame = Callable[[Image.Image], Image.Image]
NEAR_CALLS = (sim.NEAR_DUPLICATE, sim.EXACT_DUPLICATE)


def drawn_page(photo: Image.Image) -> Image.Image:
    """A phone feed post drawn with Pillow: status bar, author line, the photo in the middle,
    like and comment buttons, caption lines (flat UI and text, as in a real screenshot)."""
    page = Image.new("RGB", (600, 1000), (250, 250, 250))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 600, 40), fill=(20, 20, 20))
    draw.ellipse((20, 60, 76, 116), fill=(180, 120, 90))
    draw.text((92, 70), "someone posted a photo", fill=(30, 30, 30))
    draw.text((92, 92), "2 hours ago", fill=(120, 120, 120))
    page.paste(photo.resize((560, 600), Image.Resampling.BILINEAR), (20, 136))
    for left in (20, 150, 280):
        draw.rounded_rectangle((left, 756, left + 110, 796), radius=10, fill=(225, 230, 240))
    for row in range(5):
        top = 820 + row * 30
        draw.rectangle((20, top, 20 + 540 - 60 * (row % 3), top + 12), fill=(205, 205, 205))
    return page


def augly_template(template: str) -> Frame:
    def frame(photo: Image.Image) -> Image.Image:
        framed: Image.Image = imaugs.overlay_onto_screenshot(photo, template_filepath=template)
        return framed.convert("RGB")

    return frame


FRAMES: dict[str, Frame] = {"drawn phone page": drawn_page} | {
    f"AugLy {Path(t).name}": augly_template(t) for t in SCREENSHOT_TEMPLATES
}


@dataclass(frozen=True)
class FrameRow:
    frame: str
    pairs: int  # pairs of two different photos in this frame
    near_descriptor: int  # ...called near by the verdict without the shared-frame check
    near_verdict: int  # ...called near by the product's verdict
    copies: int  # framed photos judged against their own clean reference
    found: int  # ...called near by the product's verdict


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def frame_rows(model: ImageModel, references: list[Path], count: int) -> list[FrameRow]:
    """One row per frame, over the first `count` references (their clean files too)."""
    chosen = references[:count]
    photos = [Image.open(path).convert("RGB") for path in chosen]
    files = [path.read_bytes() for path in chosen]
    for frame in FRAMES.values():
        files += [jpeg(frame(photo)) for photo in photos]
    prints = encode(model, files).fingerprints()
    clean, framed = prints[:count], prints[count:]
    rows = []
    for index, name in enumerate(FRAMES):
        group = framed[index * count : (index + 1) * count]
        verdicts = [
            (sim.compare(group[i], group[j]), sim.compare(bare(group[i]), bare(group[j])))
            for i in range(count)
            for j in range(i + 1, count)
        ]
        found = sum(
            sim.compare(shot, reference)["verdict"] in NEAR_CALLS
            for shot, reference in zip(group, clean, strict=True)
        )
        rows.append(
            FrameRow(
                name,
                len(verdicts),
                sum(alone["verdict"] in NEAR_CALLS for _, alone in verdicts),
                sum(checked["verdict"] in NEAR_CALLS for checked, _ in verdicts),
                count,
                found,
            )
        )
    return rows


def bare(fingerprint: sim.Fingerprint) -> sim.Fingerprint:
    """The fingerprint without its cell descriptors: the verdict as the descriptor alone has it."""
    return replace(fingerprint, regions=None)

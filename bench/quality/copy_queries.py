"""Make the benchmark's queries: photos edited one to three times with AugLy, at a fixed seed.

The edits are AugLy's image functions, the library Meta made DISC21's queries with: emoji,
text, screenshot, stripe and meme overlays, pasting onto another photo, crops, small
rotations, quarter turns (90, 180, 270 degrees), mirroring left-right and upside
down, padding, colour and brightness changes, greyscale, blur, pixelisation,
opacity, skew and perspective, scaling, noise, sharpening, pixel shuffling and heavy JPEG. Each
query draws its edits and their parameters from a `random.Random` seeded with the base seed and
the query's own name, so a query is the same on every machine and does not change when another
one is added. The mix roughly follows DISC21's: overlays and crops often, destructive edits
(pixel shuffling, heavy noise) rarely.

AugLy 1.0.0 (its last release, 2022) calls two names that later releases of its dependencies
removed: NumPy's `np.float` (perspective_transform's coefficient solver) and Pillow's
`FreeTypeFont.getsize_multiline` (meme_format). `restore_removed_names` puts back equivalents
computed the same way, so every AugLy function here runs on the project's pinned Pillow and
NumPy; nothing else of AugLy is changed.
"""

from __future__ import annotations

import functools
import io
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import augly.image as imaugs
import augly.image.utils as augly_image_utils
import numpy as np
import numpy.typing as npt
from augly.utils import base_paths
from PIL import Image, ImageDraw, ImageFont

EDITS_PER_QUERY = ((1, 0.40), (2, 0.35), (3, 0.25))  # how many edits a query gets, weighted
# Latin text fonts among AugLy's assets (the others are pictograms or other scripts).
TEXT_FONTS = (
    "Montserrat-Bold",
    "OpenSans-Regular",
    "Raleway-Black",
    "Ubuntu-B",
    "Impact",
    "Pacifico",
    "IBMPlexMono-Bold",
    "PlayfairDisplay-Bold",
    "SourceSansPro-Semibold",
    "Lobster_1.3",
    "Titillium-Bold",
    "Quicksand-Bold",
)
MEME_WORDS = (
    "WHEN", "YOU", "SEE", "IT", "MONDAY", "AGAIN", "ME", "NOBODY", "EVERYONE", "LOL",
    "FINALLY", "WEEKEND", "MOOD", "THIS", "IS", "FINE", "WAIT", "FOR", "NOT", "TODAY",
)  # fmt: skip
FONTS_DIR = Path(base_paths.FONTS_DIR)
EMOJI_DIR = Path(base_paths.EMOJI_DIR)
SCREENSHOT_TEMPLATES = tuple(
    str(Path(base_paths.SCREENSHOT_TEMPLATES_DIR) / name) for name in ("web.png", "mobile.png")
)


def restore_removed_names() -> None:
    """Give AugLy back the two names its dependencies removed since its last release."""
    augly_image_utils.compute_transform_coeffs = _transform_coeffs
    if not hasattr(ImageFont.FreeTypeFont, "getsize_multiline"):
        ImageFont.FreeTypeFont.getsize_multiline = _getsize_multiline  # type: ignore[attr-defined]


def _transform_coeffs(
    src_coords: list[tuple[int, int]], dst_coords: list[tuple[float, float]]
) -> npt.NDArray[np.float64]:
    """AugLy's `compute_transform_coeffs` (least squares for the 8 perspective coefficients),
    in float64 arrays instead of the removed `np.float` matrix type."""
    rows = []
    for (sx, sy), (dx, dy) in zip(src_coords, dst_coords, strict=True):
        rows.append([dx, dy, 1, 0, 0, 0, -sx * dx, -sx * dy])
        rows.append([0, 0, 0, dx, dy, 1, -sy * dx, -sy * dy])
    a = np.array(rows, dtype=np.float64)
    b = np.array(src_coords, dtype=np.float64).reshape(8)
    return np.asarray(np.linalg.inv(a.T @ a) @ a.T @ b, dtype=np.float64).reshape(8)


def _getsize_multiline(self: ImageFont.FreeTypeFont, text: str, *args: Any) -> tuple[int, int]:
    """Pillow 9's `getsize_multiline`: the extent of multiline text drawn at the origin."""
    _, _, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox(
        (0, 0), text, font=self
    )
    return int(right), int(bottom)


@dataclass(frozen=True)
class Query:
    """One query file: its bytes, the photo it was made from, and what was done to it."""

    name: str
    source: str  # the photo's file name
    kind: str  # "copy" (of a reference), "distractor" (of a photo in no reference set), "exact"
    data: bytes
    edits: list[str] = field(default_factory=list)


Edited = tuple[Image.Image, str]  # the edited image and a short label of what was done
Edit = Callable[[Image.Image, random.Random, list[Image.Image]], Edited]


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _font(rng: random.Random) -> tuple[str, list[int]]:
    """A text font's path and the indices of its ASCII letters and digits (AugLy draws text
    as indices into the font's own character list)."""
    name = rng.choice(TEXT_FONTS)
    return str(FONTS_DIR / f"{name}.ttf"), _letters(name)


@functools.cache
def _letters(font: str) -> list[int]:
    with (FONTS_DIR / f"{font}.pkl").open("rb") as file:
        chars = pickle.load(file)  # AugLy's own asset: the code points the font has
    return [i for i, c in enumerate(chars) if chr(c).isascii() and chr(c).isalnum()]


@functools.cache
def _emojis() -> list[str]:
    return sorted(str(path) for path in EMOJI_DIR.rglob("*.png"))


def overlay_emoji(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    size = rng.uniform(0.15, 0.45)
    return imaugs.overlay_emoji(
        img,
        emoji_path=rng.choice(_emojis()),
        opacity=rng.uniform(0.6, 1.0),
        emoji_size=size,
        x_pos=rng.uniform(0.0, 1.0 - size),
        y_pos=rng.uniform(0.0, 1.0 - size),
    ), f"emoji {size:.2f}"


def overlay_text(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    font, usable = _font(rng)
    lines = [
        [rng.choice(usable) for _ in range(rng.randint(4, 12))] for _ in range(rng.randint(1, 3))
    ]
    size = rng.uniform(0.08, 0.2)
    return imaugs.overlay_text(
        img,
        text=lines,  # one list of character indices per line, as AugLy takes text
        font_file=font,
        font_size=size,
        opacity=rng.uniform(0.6, 1.0),
        color=_colour(rng),
        x_pos=rng.uniform(0.0, 0.5),
        y_pos=rng.uniform(0.0, 0.7),
    ), f"text {len(lines)} lines {size:.2f}"


def overlay_onto_screenshot(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    template = rng.choice(SCREENSHOT_TEMPLATES)
    crop = rng.random() < 0.5
    return imaugs.overlay_onto_screenshot(
        img, template_filepath=template, crop_src_to_fit=crop
    ), f"screenshot {Path(template).stem}{' cropped' if crop else ''}"


def overlay_stripes(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    kind = rng.choice(("solid", "dotted", "dashed"))
    return imaugs.overlay_stripes(
        img,
        line_width=rng.uniform(0.1, 0.6),
        line_color=_colour(rng),
        line_angle=rng.uniform(-90, 90),
        line_density=rng.uniform(0.3, 0.9),
        line_type=kind,
        line_opacity=rng.uniform(0.4, 1.0),
    ), f"stripes {kind}"


def meme_format(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    font, _usable = _font(rng)
    caption = " ".join(rng.choice(MEME_WORDS) for _ in range(rng.randint(1, 4)))
    return imaugs.meme_format(
        img,
        text=caption,
        font_file=font,
        caption_height=max(30, int(img.height * rng.uniform(0.15, 0.35))),
        text_color=_colour(rng),
        meme_bg_color=_colour(rng),
    ), "meme"


def overlay_onto_photo(img: Image.Image, rng: random.Random, others: list[Image.Image]) -> Edited:
    size = rng.uniform(0.5, 0.85)
    return imaugs.overlay_onto_background_image(
        img,
        background_image=rng.choice(others),
        overlay_size=size,
        x_pos=rng.uniform(0.0, 1.0 - size),
        y_pos=rng.uniform(0.0, 1.0 - size),
    ), f"onto another photo {size:.2f}"


def crop(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    width, height = rng.uniform(0.45, 0.85), rng.uniform(0.45, 0.85)
    x1, y1 = rng.uniform(0.0, 1.0 - width), rng.uniform(0.0, 1.0 - height)
    return imaugs.crop(img, x1=x1, y1=y1, x2=x1 + width, y2=y1 + height), (
        f"crop {width * height:.2f}"
    )


def rotate(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    degrees = rng.choice((-1, 1)) * rng.uniform(3, 25)
    return imaugs.rotate(img, degrees=degrees), f"rotate {degrees:+.0f}"


def hflip(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    return imaugs.hflip(img), "mirror"


def vflip(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    return imaugs.vflip(img), "upside-down mirror"


def rotate_quarter(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    """A quarter turn (90, 180 or 270 degrees): a phone photo shared sideways or upside down."""
    degrees = rng.choice((90, 180, 270))
    turn = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }[degrees]
    # Pillow's lossless transpose: AugLy's `rotate` would crop a pixel row at some sizes.
    return img.transpose(turn), f"quarter-turn {degrees}"


def pad(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    return imaugs.pad(
        img, w_factor=rng.uniform(0.05, 0.5), h_factor=rng.uniform(0.05, 0.5), color=_colour(rng)
    ), "pad"


def color_jitter(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    return imaugs.color_jitter(
        img,
        brightness_factor=rng.uniform(0.6, 1.4),
        contrast_factor=rng.uniform(0.6, 1.4),
        saturation_factor=rng.uniform(0.3, 2.0),
    ), "colour jitter"


def saturation(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    factor = rng.choice((rng.uniform(0.0, 0.5), rng.uniform(1.5, 3.0)))
    return imaugs.saturation(img, factor=factor), f"saturation {factor:.1f}"


def brightness(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    factor = rng.choice((rng.uniform(0.4, 0.75), rng.uniform(1.3, 1.8)))
    return imaugs.brightness(img, factor=factor), f"brightness {factor:.1f}"


def grayscale(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    return imaugs.grayscale(img), "greyscale"


def blur(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    radius = rng.uniform(1.0, 4.0)
    return imaugs.blur(img, radius=radius), f"blur {radius:.1f}"


def pixelization(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    ratio = rng.uniform(0.15, 0.5)
    return imaugs.pixelization(img, ratio=ratio), f"pixelise {ratio:.2f}"


def opacity(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    level = rng.uniform(0.35, 0.8)
    return imaugs.opacity(img, level=level), f"opacity {level:.2f}"


def skew(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    factor = rng.choice((-1, 1)) * rng.uniform(0.1, 0.4)
    return imaugs.skew(img, skew_factor=factor, axis=rng.randint(0, 1)), f"skew {factor:+.2f}"


def perspective(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    sigma = rng.uniform(0.03, 0.1) * max(img.size)
    return imaugs.perspective_transform(
        img, sigma=sigma, seed=rng.randrange(2**31), crop_out_black_border=rng.random() < 0.5
    ), "perspective"


def encoding_quality(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    quality = rng.randint(5, 25)
    return imaugs.encoding_quality(img, quality=quality), f"JPEG q{quality}"


def scale(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    factor = rng.uniform(0.3, 0.8)
    return imaugs.scale(img, factor=factor), f"scale {factor:.2f}"


def aspect_ratio(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    ratio = rng.choice((rng.uniform(0.6, 0.85), rng.uniform(1.2, 1.7)))
    return imaugs.change_aspect_ratio(img, ratio=ratio), f"aspect {ratio:.2f}"


def random_noise(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    var = rng.uniform(0.005, 0.03)
    return imaugs.random_noise(img, var=var, seed=rng.randrange(2**31)), f"noise {var:.3f}"


def sharpen(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    return imaugs.sharpen(img, factor=rng.uniform(2.0, 10.0)), "sharpen"


def shuffle_pixels(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Edited:
    factor = rng.uniform(0.05, 0.2)
    return imaugs.shuffle_pixels(img, factor=factor, seed=rng.randrange(2**31)), (
        f"shuffle {factor:.2f}"
    )


# Each edit with its weight: overlays and crops often, the destructive ones rarely.
EDITS: tuple[tuple[Edit, float], ...] = (
    (overlay_emoji, 8), (overlay_text, 8), (overlay_onto_screenshot, 6), (overlay_stripes, 5),
    (meme_format, 4), (overlay_onto_photo, 4), (crop, 10), (rotate, 5), (hflip, 6), (vflip, 2),
    (rotate_quarter, 4), (pad, 5),
    (color_jitter, 5), (saturation, 3), (brightness, 3), (grayscale, 3), (blur, 5),
    (pixelization, 4), (opacity, 3), (skew, 3), (perspective, 4), (encoding_quality, 6),
    (scale, 4), (aspect_ratio, 3), (random_noise, 3), (sharpen, 2), (shuffle_pixels, 1),
)  # fmt: skip


def edit_photo(
    photo: Image.Image, rng: random.Random, others: list[Image.Image]
) -> tuple[bytes, list[str]]:
    """One query from `photo`: 1-3 distinct edits in random order (a heavy JPEG, when drawn,
    last, as a re-upload would be), then saved as JPEG as it would be shared."""
    counts, count_weights = zip(*EDITS_PER_QUERY, strict=True)
    count = rng.choices(counts, weights=count_weights)[0]
    pool = list(EDITS)
    chosen: list[Edit] = []
    while len(chosen) < count:
        edit = rng.choices([e for e, _ in pool], weights=[w for _, w in pool])[0]
        chosen.append(edit)
        pool = [(e, w) for e, w in pool if e is not edit]
    chosen.sort(key=lambda e: e is encoding_quality)  # stable: the others keep their order
    image, done = photo, []
    for edit in chosen:
        result, label = edit(image, rng, others)
        image = result.convert("RGB")
        done.append(label)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=rng.randint(75, 95))
    return out.getvalue(), done


def exact_copy(path: Path, index: int) -> tuple[bytes, str]:
    """An unedited re-upload: the same file, or (every other one) the same pixels as PNG."""
    if index % 2 == 0:
        return path.read_bytes(), "same bytes"
    with Image.open(path) as img:
        out = io.BytesIO()
        img.convert("RGB").save(out, "PNG")
    return out.getvalue(), "same pixels (PNG)"


def make_queries(
    references: list[Path],
    distractors: list[Path],
    seed: int,
    per_reference: int,
    per_distractor: int,
    exact_every: int,
) -> list[Query]:
    """Every query, in a fixed order: edited copies of each reference, edited copies of each
    distractor photo, then an unedited re-upload of every `exact_every`-th reference. Photos
    pasted under a copy ("onto another photo") are distractor photos, never references."""
    restore_removed_names()
    random.seed(seed)  # AugLy functions that draw from the global generators get a fixed start
    np.random.seed(seed)
    backgrounds = [Image.open(path).convert("RGB") for path in distractors]
    queries: list[Query] = []
    for kind, photos, count in (
        ("copy", references, per_reference),
        ("distractor", distractors, per_distractor),
    ):
        for path in photos:
            with Image.open(path) as img:
                photo = img.convert("RGB")
            others = [b for b, p in zip(backgrounds, distractors, strict=True) if p != path]
            for n in range(count):
                name = f"{kind}-{path.stem}-{n}"
                data, edits = edit_photo(photo, random.Random(f"{seed}:{name}"), others)
                queries.append(Query(name, path.name, kind, data, edits))
    for index, path in enumerate(references[::exact_every]):
        data, how = exact_copy(path, index)
        queries.append(Query(f"exact-{path.stem}", path.name, "exact", data, [how]))
    return queries

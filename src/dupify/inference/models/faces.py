"""Face detection for the opt-in `faces` feature: boxes only, from OpenCV's bundled Haar cascade.

Detection only, by design: nothing here computes landmarks, descriptors or anything else that
could identify a person (biometric data is outside what the privacy policy collects).
"""

from __future__ import annotations

import math
import threading
from typing import TypedDict

import cv2
import numpy as np
import numpy.typing as npt

from dupify.analysis.pixels import require_rgb
from dupify.inference.assets import AssetError, PinnedAsset
from dupify.inference.session import SessionPolicy

MODEL_VERSION = "haar-frontalface-alt2@1"
# The cascade inside the installed OpenCV wheel (cv2.data.haarcascades).
CASCADE = PinnedAsset(
    "cv2",
    "data/haarcascade_frontalface_alt2.xml",
    "7b0c967d9abbdfbde025eb9c786947d151b6426040d07a8f9562ed8fd90724b4",
    "reinstall opencv-python-headless",
)

# The cascade was trained on 20x20 windows; smaller faces are noise at any setting.
MIN_FACE = 24
# The shorter side to decode images at for `detect`: faces from about 30 pixels across are found
# reliably, 4% of the shorter side at 736. 1024 would see 3% faces but cost 2.3x as much (the
# cascade scans every pyramid level down to MIN_FACE), and matches what OCR needs anyway.
WORKING_SIDE = 736
# A longer side beyond this is shrunk first: detection cost grows with pixels, and a face
# smaller than MIN_FACE at this size is too small to matter.
MAX_SIDE = 2000
# Each pyramid level is 1/1.1 of the last (OpenCV's default): dense enough that a real face is
# hit by many overlapping windows, which is what the confidence below counts.
SCALE_FACTOR = 1.1
# A candidate needs this many overlapping raw windows to count as a face. On scikit-image's
# photos frontal faces gather 30-40 windows and false hits (coins, bricks, retina) 2-3.
MIN_NEIGHBOURS = 5
# confidence = 1 - exp(-windows / CONFIDENCE_WINDOWS): 5 windows -> 0.39, 10 -> 0.63,
# 20 -> 0.86, 30 -> 0.95. A cascade has no probability to offer; agreement is its evidence.
CONFIDENCE_WINDOWS = 10.0
# Two boxes covering this share of the smaller one are one face (nested or shifted duplicates).
DUPLICATE_OVERLAP = 0.5


class Face(TypedDict):
    """One detected face: [x, y, width, height] and a confidence in (0, 1)."""

    box: list[int]
    confidence: float


class FaceDetector:
    """Finds frontal faces in an RGB image; load once per process and share it.

    `detect` is blocking CPU work (0.1-0.2 s at 736 px on two cores): callers on the event loop
    run it with `await asyncio.to_thread(detector.detect, pixels)`. Calls are serialised by a
    lock: a CascadeClassifier keeps scratch buffers of its own, and OpenCV does not promise that
    concurrent calls on one are safe; each call already spreads over the policy's threads
    through OpenCV's thread pool (the cascade runs on the CPU whatever the policy's device).
    """

    def __init__(self, policy: SessionPolicy) -> None:
        path = CASCADE.locate()
        CASCADE.read(path)
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise AssetError(f"OpenCV could not load the face cascade {path}")
        self.threads = policy.exclusive_threads
        # OpenCV's pool is process-wide; without this it sizes itself from the host's cores.
        cv2.setNumThreads(self.threads)
        self._lock = threading.Lock()

    def detect(
        self, pixels: npt.NDArray[np.uint8], original_size: tuple[int, int] | None = None
    ) -> list[Face]:
        """The faces in `pixels` (HxWx3 uint8 RGB), most confident first.

        Boxes are [x, y, width, height] in the coordinates of `original_size` (width, height)
        when given, the size of the image that `pixels` was reduced from, and of `pixels`
        otherwise.
        """
        require_rgb(pixels)
        height, width = pixels.shape[:2]
        target_width, target_height = original_size or (width, height)
        grey = _grey_for_detection(pixels)
        grey_height, grey_width = grey.shape
        if min(grey_height, grey_width) < MIN_FACE:
            return []
        with self._lock:
            boxes, windows = self._cascade.detectMultiScale2(
                grey,
                scaleFactor=SCALE_FACTOR,
                minNeighbors=MIN_NEIGHBOURS,
                minSize=(MIN_FACE, MIN_FACE),
            )
        candidates = sorted(
            zip(
                (tuple(int(v) for v in box) for box in boxes),
                (int(count) for count in np.ravel(windows)),
                strict=True,
            ),
            key=lambda item: (-item[1], item[0][1], item[0][0]),
        )
        scale_x = target_width / grey_width
        scale_y = target_height / grey_height
        faces: list[Face] = []
        kept: list[tuple[int, ...]] = []
        for box, count in candidates:
            if any(_overlap_of_smaller(box, other) >= DUPLICATE_OVERLAP for other in kept):
                continue
            kept.append(box)
            x, y, w, h = box
            faces.append(
                {
                    "box": [
                        round(x * scale_x),
                        round(y * scale_y),
                        round(w * scale_x),
                        round(h * scale_y),
                    ],
                    "confidence": round(1.0 - math.exp(-count / CONFIDENCE_WINDOWS), 4),
                }
            )
        return faces


def _grey_for_detection(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Luma, shrunk to MAX_SIDE, histogram-equalised (the cascade was trained on such input)."""
    height, width = pixels.shape[:2]
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    scale = MAX_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.equalizeHist(grey), dtype=np.uint8)


def _overlap_of_smaller(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Intersection area of two [x, y, w, h] boxes over the smaller box's area."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter_w = min(ax + aw, bx + bw) - max(ax, bx)
    inter_h = min(ay + ah, by + bh) - max(ay, by)
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    return (inter_w * inter_h) / min(aw * ah, bw * bh)

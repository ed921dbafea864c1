"""OCR for the opt-in `text` feature: RapidOCR's PP-OCRv4 ONNX models, loaded once per process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, TypedDict

import cv2
import numpy as np
import numpy.typing as npt

from dupify.analysis.pixels import require_rgb
from dupify.inference.assets import PinnedAsset
from dupify.inference.session import SessionPolicy

MODEL_VERSION = "pp-ocrv4@1"
# The three networks the `rapidocr-onnxruntime` 1.4.4 wheel carries, under the names its bundled
# config.yaml gives them. Checking their hashes pins MODEL_VERSION to exact weights.
_INSTALL = "`make install` installs it: pip install --no-deps rapidocr-onnxruntime==1.4.4"
DETECTOR = PinnedAsset(
    "rapidocr_onnxruntime",
    "models/ch_PP-OCRv4_det_infer.onnx",
    "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    _INSTALL,
)
CLASSIFIER = PinnedAsset(
    "rapidocr_onnxruntime",
    "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    _INSTALL,
)
RECOGNISER = PinnedAsset(
    "rapidocr_onnxruntime",
    "models/ch_PP-OCRv4_rec_infer.onnx",
    "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    _INSTALL,
)
MODELS = (DETECTOR, CLASSIFIER, RECOGNISER)

# The detector sees the image with its shorter side scaled to DETECT_SHORT_SIDE (RapidOCR's own
# default, up or down) unless that would make the longer side exceed DETECT_MAX_SIDE. Our own
# resize replaces RapidOCR's, whose "shorter side to 736" rule has no cap on the longer side: a
# 12000x20 strip would become a detector input of hundreds of megapixels.
DETECT_SHORT_SIDE = 736
DETECT_MAX_SIDE = 2000
# The shorter side to decode images at for `read`: a larger one is shrunk back to this anyway.
# Measured: 12-pixel print in a 1365x1024 photo still reads once shrunk to this size.
WORKING_SIDE = DETECT_SHORT_SIDE
# Below this many pixels on the shorter side (after the cap) no legible line of text fits.
MIN_SIDE = 8
# Lines recognised with a lower confidence are dropped (RapidOCR's default `text_score`).
MIN_CONFIDENCE = 0.5


class TextLine(TypedDict):
    """One recognised line: its text, the recogniser's confidence, and its quadrilateral."""

    text: str
    confidence: float
    box: list[list[int]]


def verify_models(model_dir: Path | None = None) -> list[Path]:
    """The path of each network (in `model_dir`, else in the installed package), in MODELS
    order, after checking its bytes are the pinned weights."""
    paths = [
        model_dir / Path(asset.path).name if model_dir is not None else asset.locate()
        for asset in MODELS
    ]
    for asset, path in zip(MODELS, paths, strict=True):
        asset.read(path)
    return paths


class TextReader:
    """Reads the lines of text in an RGB image; load once per process and share it.

    `read` is blocking CPU work (0.15-0.3 s per image on two idle cores): callers on the event
    loop run it with `await asyncio.to_thread(reader.read, pixels)`. Calls are serialised by a
    lock, because RapidOCR keeps per-call state on its detector; each call already uses the
    policy's threads inside ONNX Runtime, so running two at once would gain nothing.

    RapidOCR opens its three sessions itself (it takes no session objects), so the policy is
    handed over as the settings it does take: the thread count, one inter-op thread as in
    `OrtSession`, and CUDA for each network when the policy's device asks for it. Its sessions
    come from the onnxruntime that dupify.inference.session imported, telemetry off.
    """

    def __init__(self, policy: SessionPolicy) -> None:
        detector, classifier, recogniser = verify_models()
        use_cuda = policy.uses_cuda()
        # Imported here so that a server that never reads text never loads the package.
        from rapidocr_onnxruntime import RapidOCR

        self.intra_op_threads = policy.exclusive_threads
        self._engine: Any = RapidOCR(
            intra_op_num_threads=self.intra_op_threads,
            inter_op_num_threads=1,
            det_use_cuda=use_cuda,
            cls_use_cuda=use_cuda,
            rec_use_cuda=use_cuda,
            text_score=MIN_CONFIDENCE,
            max_side_len=DETECT_MAX_SIDE,
            # "max" with our own cap: the detector only ever shrinks what `_fit` produced.
            det_limit_type="max",
            det_limit_side_len=DETECT_MAX_SIDE,
            det_model_path=str(detector),
            cls_model_path=str(classifier),
            rec_model_path=str(recogniser),
        )
        self._lock = threading.Lock()

    def read(
        self, pixels: npt.NDArray[np.uint8], original_size: tuple[int, int] | None = None
    ) -> list[TextLine]:
        """The lines of text in `pixels` (HxWx3 uint8 RGB), top to bottom, then left to right.

        Each box is four [x, y] corners (top-left, top-right, bottom-right, bottom-left) in the
        coordinates of `original_size` (width, height) when given, the size of the image that
        `pixels` was reduced from, and of `pixels` otherwise.
        """
        require_rgb(pixels)
        height, width = pixels.shape[:2]
        target_width, target_height = original_size or (width, height)
        fitted = _fit(pixels)
        fitted_height, fitted_width = fitted.shape[:2]
        if min(fitted_height, fitted_width) < MIN_SIDE:
            return []
        # RapidOCR takes arrays in OpenCV's BGR order.
        bgr = np.ascontiguousarray(fitted[:, :, ::-1])
        with self._lock:
            found, _timings = self._engine(bgr)
        to_target = np.array([target_width / fitted_width, target_height / fitted_height])
        lines: list[TextLine] = []
        for corners, text, confidence in found or []:
            points = np.asarray(corners, dtype=np.float64) * to_target
            lines.append(
                {
                    "text": str(text),
                    "confidence": round(float(confidence), 4),
                    "box": np.rint(points).astype(int).tolist(),
                }
            )
        lines.sort(key=_reading_order)
        return lines


def _fit(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The image at the detector's working size (see DETECT_SHORT_SIDE and DETECT_MAX_SIDE)."""
    height, width = pixels.shape[:2]
    scale = min(DETECT_SHORT_SIDE / min(height, width), DETECT_MAX_SIDE / max(height, width))
    if abs(scale - 1.0) < 0.02:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(pixels, size, interpolation=interpolation), dtype=np.uint8)


def _reading_order(line: TextLine) -> tuple[int, int]:
    """Top to bottom by the box's upper edge, then left to right."""
    box = line["box"]
    return (min(y for _, y in box), min(x for x, _ in box))

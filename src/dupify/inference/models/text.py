"""OCR for the opt-in `text` feature: RapidOCR's PP-OCRv4 ONNX models, loaded once per process."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path
from typing import Any, TypedDict

import cv2
import numpy as np
import numpy.typing as npt

from dupify.analysis.pixels import require_rgb
from dupify.config import available_cores

MODEL_VERSION = "pp-ocrv4@1"
MODEL_PACKAGE = "rapidocr_onnxruntime"
# The three networks the `rapidocr-onnxruntime` 1.4.4 wheel carries, by the names its bundled
# config.yaml gives them. Checking their hashes pins MODEL_VERSION to exact weights.
MODEL_SHA256 = {
    "ch_PP-OCRv4_det_infer.onnx": (
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
    ),
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": (
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
    ),
    "ch_PP-OCRv4_rec_infer.onnx": (
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
    ),
}

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


class OcrModelError(RuntimeError):
    """The OCR package is missing, or its bundled models are not the ones this version names."""


def bundled_model_dir() -> Path:
    """Where the `rapidocr-onnxruntime` wheel put its ONNX files, found without importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise OcrModelError(
            f"the {MODEL_PACKAGE!r} package is not installed; the `text` feature needs it "
            "(`make install` installs it: pip install --no-deps rapidocr-onnxruntime==1.4.4)"
        )
    return Path(locations[0]) / "models"


def verify_models(model_dir: Path) -> dict[str, Path]:
    """The path of each bundled model, after checking its bytes are the pinned weights."""
    paths: dict[str, Path] = {}
    for name, expected in MODEL_SHA256.items():
        path = model_dir / name
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise OcrModelError(f"cannot read OCR model {path}: {exc}") from exc
        if actual != expected:
            raise OcrModelError(
                f"OCR model {path} has sha256 {actual}, expected {expected}; reinstall "
                "rapidocr-onnxruntime==1.4.4"
            )
        paths[name] = path
    return paths


class TextReader:
    """Reads the lines of text in an RGB image; load once per process and share it.

    `read` is blocking CPU work (0.15-0.3 s per image on two idle cores): callers on the event
    loop run it with `await asyncio.to_thread(reader.read, pixels)`. Calls are serialised by a
    lock, because RapidOCR keeps per-call state on its detector; each call already uses
    `intra_op_threads` cores inside ONNX Runtime, so running two at once would gain nothing.
    """

    def __init__(self, intra_op_threads: int = 0) -> None:
        if intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0 (0 = one per available core)")
        paths = verify_models(bundled_model_dir())
        # Imported here so that a server that never reads text never loads the package.
        from rapidocr_onnxruntime import RapidOCR

        self.intra_op_threads = intra_op_threads or available_cores()
        self._engine: Any = RapidOCR(
            intra_op_num_threads=self.intra_op_threads,
            # One graph at a time per session, as in dupify.inference.session.OrtSession.
            inter_op_num_threads=1,
            text_score=MIN_CONFIDENCE,
            max_side_len=DETECT_MAX_SIDE,
            # "max" with our own cap: the detector only ever shrinks what `_fit` produced.
            det_limit_type="max",
            det_limit_side_len=DETECT_MAX_SIDE,
            det_model_path=str(paths["ch_PP-OCRv4_det_infer.onnx"]),
            cls_model_path=str(paths["ch_ppocr_mobile_v2.0_cls_infer.onnx"]),
            rec_model_path=str(paths["ch_PP-OCRv4_rec_infer.onnx"]),
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

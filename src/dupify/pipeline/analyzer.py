"""Analysis of a batch of images: decode and measure in workers, then each model once per image."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from dupify.analysis.safety import safety_verdict
from dupify.analysis.similarity import Fingerprint
from dupify.config import Settings
from dupify.errors import ApiError
from dupify.images.workers import Decoder
from dupify.inference.models.base import EMBEDDING, Array
from dupify.inference.models.faces import MODEL_VERSION as FACES_VERSION
from dupify.inference.models.faces import WORKING_SIDE as FACES_WORKING_SIDE
from dupify.inference.models.faces import FaceDetector
from dupify.inference.models.semantic import LABELS_VERSION, PROBABILITIES, top_labels
from dupify.inference.models.text import MODEL_VERSION as TEXT_VERSION
from dupify.inference.models.text import WORKING_SIDE as TEXT_WORKING_SIDE
from dupify.inference.models.text import TextReader
from dupify.inference.models.visual import NSFW
from dupify.inference.registry import ModelRegistry
from dupify.pipeline.pre import PIXEL_MEASURES, Inspection

VISUAL_MODEL = "dupify-visual-1"
SEMANTIC_MODEL = "dupify-semantic-1"
SAFETY_VERSION = "open-nsfw@1"

FEATURES = (
    "labels",
    "safety",
    "colors",
    "hashes",
    "quality",
    "metadata",
    "text",
    "faces",
    "embedding",
)
# Cheap enough to run on every request; text, faces and embedding are opt-in (cost or size).
DEFAULT_FEATURES = frozenset({"labels", "safety", "colors", "hashes", "quality", "metadata"})

# Shorter side kept for OCR and face detection: small print and small faces need pixels that
# the 256-px model input would throw away (both components work at this size; see their modules).
DETAIL_WORKING_SIDE = max(TEXT_WORKING_SIDE, FACES_WORKING_SIDE)

T = TypeVar("T")


@dataclass(frozen=True)
class AnalysisOptions:
    features: frozenset[str]
    embedding_model: str
    top_k: int = 5
    max_colors: int = 5


class LazyComponent(Generic[T]):
    """A heavy component (the OCR models, the face cascade) loaded on first use, once, shared."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._load()
        return self._value


class Analyzer:
    """Turns image bytes into analysis results, using the shared decoder and model registry.

    Every model that a request's features need runs exactly once per image, through its
    micro-batcher, whatever the overlap (safety and the visual embedding share one open-nsfw
    pass; labels and the semantic embedding share one EfficientNet pass).
    """

    def __init__(
        self,
        decoder: Decoder,
        registry: ModelRegistry,
        text_reader: LazyComponent[TextReader],
        face_detector: LazyComponent[FaceDetector],
    ) -> None:
        self.decoder = decoder
        self.registry = registry
        self.text_reader = text_reader
        self.face_detector = face_detector

    def models_for(self, options: AnalysisOptions) -> list[str]:
        """The model ids the features need, each once."""
        needed: list[str] = []
        if "safety" in options.features:
            needed.append(VISUAL_MODEL)
        if "labels" in options.features:
            needed.append(SEMANTIC_MODEL)
        if "embedding" in options.features and options.embedding_model not in needed:
            needed.append(options.embedding_model)
        return needed

    def model_versions(self, options: AnalysisOptions) -> dict[str, str]:
        """The `models` map of a response: which model version produced which feature."""
        versions: dict[str, str] = {}
        if "labels" in options.features:
            versions["labels"] = LABELS_VERSION
        if "safety" in options.features:
            versions["safety"] = SAFETY_VERSION
        if "text" in options.features:
            versions["text"] = TEXT_VERSION
        if "faces" in options.features:
            versions["faces"] = FACES_VERSION
        if "embedding" in options.features:
            versions["embedding"] = options.embedding_model
        return versions

    def working_side(self, model_ids: Sequence[str]) -> int:
        """The side models and pixel measures see, whatever else a request asked for."""
        # Pixel measures alone work on a modest image (hashes resize to 32 px anyway).
        return max(
            (self.registry.get(model_id).working_side for model_id in model_ids), default=256
        )

    async def inspect_all(
        self,
        images: Sequence[bytes],
        working_side: int,
        measures: frozenset[str],
        max_colors: int,
        detail_side: int = 0,
    ) -> list[Inspection | ApiError]:
        """Decode and measure every image in the worker pool; a failure stays with its image."""
        results = await asyncio.gather(
            *(
                self.decoder.inspect(data, working_side, measures, max_colors, detail_side)
                for data in images
            ),
            return_exceptions=True,
        )
        inspections: list[Inspection | ApiError] = []
        for result in results:
            if isinstance(result, Inspection | ApiError):
                inspections.append(result)
            else:
                raise result
        return inspections

    async def run_models(
        self, model_ids: Sequence[str], pixels: Sequence[np.ndarray]
    ) -> dict[str, list[dict[str, Array]]]:
        """Every model's output rows for every image, the models running concurrently."""

        async def run(model_id: str) -> list[dict[str, Array]]:
            model = self.registry.get(model_id)
            tensors = await asyncio.gather(
                *(asyncio.to_thread(model.preprocess, image) for image in pixels)
            )
            return await self.registry.infer(model_id, list(tensors))

        outputs = await asyncio.gather(*(run(model_id) for model_id in model_ids))
        return dict(zip(model_ids, outputs, strict=True))

    async def analyze(
        self, images: Sequence[bytes], options: AnalysisOptions
    ) -> list[dict[str, Any] | ApiError]:
        """One result dict (API section 4) or one ApiError per image, in order."""
        model_ids = self.models_for(options)
        for model_id in model_ids:
            self.registry.get(model_id)  # an unknown model fails the request, not each image
        inspections = await self.inspect_all(
            images,
            self.working_side(model_ids),
            options.features & PIXEL_MEASURES,
            options.max_colors,
            DETAIL_WORKING_SIDE if options.features & {"text", "faces"} else 0,
        )
        good = [item for item in inspections if isinstance(item, Inspection)]
        pixels = [item.image.pixels for item in good]
        outputs, texts, faces = await asyncio.gather(
            self.run_models(model_ids, pixels) if good else _nothing(dict()),
            self._per_image(self.text_reader, "read", good, "text" in options.features),
            self._per_image(self.face_detector, "detect", good, "faces" in options.features),
        )
        results: list[dict[str, Any] | ApiError] = []
        position = 0
        for inspection in inspections:
            if isinstance(inspection, ApiError):
                results.append(inspection)
                continue
            rows = {model_id: outputs[model_id][position] for model_id in model_ids}
            results.append(
                _assemble(
                    inspection,
                    rows,
                    options,
                    texts[position] if texts else None,
                    faces[position] if faces else None,
                )
            )
            position += 1
        return results

    async def _per_image(
        self,
        component: LazyComponent[Any],
        method: str,
        inspections: Sequence[Inspection],
        wanted: bool,
    ) -> list[Any]:
        """OCR or face detection on each image, boxes in the original image's coordinates."""
        if not wanted or not inspections:
            return []
        instance = await asyncio.to_thread(component.get)
        run = getattr(instance, method)
        return list(
            await asyncio.gather(
                *(
                    asyncio.to_thread(
                        run,
                        (item.detail or item.image).pixels,
                        (item.image.width, item.image.height),
                    )
                    for item in inspections
                )
            )
        )

    async def fingerprint_each(
        self, images: Sequence[bytes], model_id: str, params: Sequence[str] | None = None
    ) -> list[Fingerprint | ApiError]:
        """What compare and duplicates need of each image (hashes and an embedding), in order.

        With `params`, the first undecodable image fails the whole request (named by its
        param) before any model runs; without, each failure stays with its image.
        """
        model = self.registry.get(model_id)
        inspections = await self.inspect_all(images, model.working_side, frozenset({"hashes"}), 1)
        if params is not None:
            for param, inspection in zip(params, inspections, strict=True):
                if isinstance(inspection, ApiError):
                    raise inspection.at(param)
        good = [item for item in inspections if isinstance(item, Inspection)]
        outputs = await self.run_models([model_id], [item.image.pixels for item in good])
        rows = iter(outputs[model_id])
        return [
            item if isinstance(item, ApiError) else _fingerprint(item, next(rows)[EMBEDDING])
            for item in inspections
        ]

    async def fingerprints(
        self, images: Sequence[bytes], params: Sequence[str], model_id: str
    ) -> list[Fingerprint]:
        """Every image's fingerprint; the first bad image fails the request."""
        each = await self.fingerprint_each(images, model_id, params)
        return [item for item in each if isinstance(item, Fingerprint)]


def build_analyzer(decoder: Decoder, registry: ModelRegistry, settings: Settings) -> Analyzer:
    """An analyzer whose OCR and face components load on first use, with the inference threads."""
    threads = settings.inference.intra_op_threads
    return Analyzer(
        decoder,
        registry,
        LazyComponent(lambda: TextReader(intra_op_threads=threads)),
        LazyComponent(lambda: FaceDetector(threads=threads)),
    )


def _fingerprint(inspection: Inspection, embedding: Array) -> Fingerprint:
    hashes = inspection.measures["hashes"]
    return Fingerprint(
        sha256=hashes["sha256"],
        pixel_sha256=inspection.image.pixel_sha256,
        phash=hashes["phash"],
        dhash=hashes["dhash"],
        embedding=embedding,
    )


async def _nothing(value: T) -> T:
    return value


def _assemble(
    inspection: Inspection,
    rows: dict[str, dict[str, Array]],
    options: AnalysisOptions,
    text: Any,
    faces: Any,
) -> dict[str, Any]:
    """One image's result in the documented field order, holding only the asked-for features."""
    features = options.features
    image = inspection.image
    result: dict[str, Any] = {}
    if "metadata" in features:
        result["metadata"] = {
            "width": image.width,
            "height": image.height,
            "format": image.format,
            "mode": image.mode,
            "animated": image.animated,
            "exif_gps_present": image.exif_gps_present,
        }
    if "labels" in features:
        result["labels"] = top_labels(rows[SEMANTIC_MODEL][PROBABILITIES], options.top_k)
    if "safety" in features:
        result["safety"] = safety_verdict(float(rows[VISUAL_MODEL][NSFW]))
    for measure in ("colors", "hashes", "quality"):
        if measure in features:
            result[measure] = inspection.measures[measure]
    if "text" in features:
        result["text"] = text
    if "faces" in features:
        result["faces"] = faces
    if "embedding" in features:
        result["embedding"] = rows[options.embedding_model][EMBEDDING]
    return result

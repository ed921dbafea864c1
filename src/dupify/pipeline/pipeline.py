"""The one image pipeline every route, the playground and the local tools run: pre (decode and
measure in the worker pool, model preprocessing), core (the inference backend), post."""

from __future__ import annotations

import asyncio
import functools
import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from dupify.analysis.similarity import Fingerprint
from dupify.errors import ApiError
from dupify.images.workers import Decoder
from dupify.inference.backend import InferenceBackend, ModelInput
from dupify.inference.batcher import Rows
from dupify.inference.models.base import EMBEDDING, Array, FloatArray, ImageModel, text_tower_id
from dupify.inference.models.faces import FaceDetector
from dupify.inference.models.text import TextReader
from dupify.inference.registry import FINGERPRINT_ROLE, ModelRegistry
from dupify.inference.session import SessionPolicy
from dupify.pipeline import post
from dupify.pipeline.features import DETAIL_WORKING_SIDE, AnalysisOptions, models_for
from dupify.pipeline.pre import PIXEL_MEASURES, Inspection, inspect_image, inspection_cost

T = TypeVar("T")
# Pixel measures alone work on a modest image (hashes resize to 32 px anyway).
MEASURES_SIDE = 256
# Token rows a text call puts into a text tower's queue at once (the queue holds at least 64:
# config.Settings' check), so any number of label prompts is admitted in turns.
TEXT_CHUNK = 64


def every_or_first_error(outcomes: Sequence[T | ApiError], params: Sequence[str]) -> list[T]:
    """Every image's outcome, or, for endpoints that answer a request as a whole, the first
    failed image's error (in request order, named by its param) as the request's error."""
    done: list[T] = []
    for param, outcome in zip(params, outcomes, strict=True):
        if isinstance(outcome, ApiError):
            raise outcome.at(param)
        done.append(outcome)
    return done


@dataclass(frozen=True)
class Plan:
    """What one call asks of the stages."""

    models: tuple[str, ...] = ()  # run in core, each once per image
    measures: frozenset[str] = frozenset()  # pixel measures, computed in the decode worker
    max_colors: int = 5
    detail: bool = False  # a second, larger decode for OCR and face detection


@dataclass(frozen=True)
class Processed:
    """One image through pre and core: its decode and measures, and each model's row."""

    inspection: Inspection
    rows: dict[str, Rows]


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


class Pipeline:
    """Turns image bytes into vectors, analyses and fingerprints; one object per process.

    pre: every image is decoded (and its pixel measures taken) in the decoder's worker pool, at
    the largest working side of the models the call needs, so a vector never depends on what
    else a request asked for; each model's `preprocess` then runs in the local backend's
    runners as they build a batch (or here, in a thread, for a backend that takes tensors; not
    at all for one that takes image bytes). core: each model runs once per image through the
    inference backend, the models concurrently, whatever the overlap (safety and the visual
    embedding share one pass). post: dupify.pipeline.post. An image that fails stays that image's
    outcome; with `params`, the first failure (request order) fails the whole call before any
    model runs (see `every_or_first_error`).

    Every call names the `account` the work is for: the decoder's fair queue and budgets are
    per account (`Decoder.admit`). `None` is the operator's own work (the local tools, the
    warm-up), which is queued like any account's but never refused for its cost.
    """

    def __init__(
        self,
        decoder: Decoder,
        registry: ModelRegistry,
        backend: InferenceBackend,
        text_reader: LazyComponent[TextReader],
        face_detector: LazyComponent[FaceDetector],
    ) -> None:
        self.decoder = decoder
        self.registry = registry
        self.backend = backend
        self.text_reader = text_reader
        self.face_detector = face_detector
        # Each clip model's default zero-shot label vectors (the operator's label set), made on
        # first use and kept: operator text, never a request's.
        self._default_labels: dict[str, FloatArray] = {}

    # --- what callers run -------------------------------------------------------------------

    async def embed(
        self,
        images: Sequence[bytes],
        model_id: str,
        params: Sequence[str] | None = None,
        *,
        account: str | None,
    ) -> list[FloatArray | ApiError]:
        """Each image's full unit vector from `model_id`, or its error, in order."""
        processed = await self.run(images, Plan(models=(model_id,)), params, account=account)
        return [
            item if isinstance(item, ApiError) else item.rows[model_id][EMBEDDING]
            for item in processed
        ]

    async def embed_all(
        self, images: Sequence[bytes], params: Sequence[str], model_id: str, *, account: str | None
    ) -> list[FloatArray]:
        """Every image's vector; the first bad image fails the request."""
        vectors = await self.embed(images, model_id, params, account=account)
        return every_or_first_error(vectors, params)

    async def fingerprints(
        self, images: Sequence[bytes], params: Sequence[str] | None = None, *, account: str | None
    ) -> list[Fingerprint | ApiError]:
        """What compare and duplicates need of each image (hashes and the fingerprint model's
        embedding), or its error, in order."""
        model = self.registry.for_role(FINGERPRINT_ROLE)
        plan = Plan(models=(model.id,), measures=frozenset({"hashes"}), max_colors=1)
        return [
            item
            if isinstance(item, ApiError)
            else post.fingerprint(item.inspection, item.rows[model.id], model.region_space)
            for item in await self.run(images, plan, params, account=account)
        ]

    async def fingerprints_all(
        self, images: Sequence[bytes], params: Sequence[str], *, account: str | None
    ) -> list[Fingerprint]:
        """Every image's fingerprint; the first bad image fails the request."""
        fingerprints = await self.fingerprints(images, params, account=account)
        return every_or_first_error(fingerprints, params)

    async def analyze(
        self, images: Sequence[bytes], options: AnalysisOptions, *, account: str | None
    ) -> list[dict[str, Any] | ApiError]:
        """One result dict (API section 4) or one ApiError per image, in order."""
        features = options.features
        plan = Plan(
            models=tuple(models_for(self.registry, options)),
            measures=features & PIXEL_MEASURES,
            max_colors=options.max_colors,
            detail=bool(features & {"text", "faces"}),
        )
        inspections = await self.pre(images, plan, account=account)
        processed, texts, faces = await asyncio.gather(
            self.core(images, inspections, plan),
            self._per_image(self.text_reader, "read", inspections, "text" in features),
            self._per_image(self.face_detector, "detect", inspections, "faces" in features),
        )
        return [
            item
            if isinstance(item, ApiError)
            else post.analysis(item.inspection, item.rows, self.registry, options, text, face)
            for item, text, face in zip(processed, texts, faces, strict=True)
        ]

    async def tokenize(self, model_id: str, texts: Sequence[str]) -> list[Array]:
        """Each text as its model's token row (in a thread: tokenising is CPU work)."""
        encoder = self.registry.text_model(model_id).text_encoder
        assert encoder is not None
        return await asyncio.to_thread(encoder.tokenize, list(texts))

    async def embed_tokens(self, model_id: str, rows: Sequence[Array]) -> list[FloatArray]:
        """Each token row's unit vector through the model's text tower (micro-batched across
        requests by the backend), in order."""
        vectors: list[FloatArray] = []
        for start in range(0, len(rows), TEXT_CHUNK):
            chunk = rows[start : start + TEXT_CHUNK]
            outcomes = await self.backend.infer(text_tower_id(model_id), list(chunk))
            for outcome in outcomes:
                if isinstance(outcome, ApiError):
                    raise outcome
                vectors.append(outcome[EMBEDDING])
        return vectors

    async def embed_texts(self, model_id: str, texts: Sequence[str]) -> list[FloatArray]:
        """Each text's unit vector, in the same space as the model's image vectors."""
        return await self.embed_tokens(model_id, await self.tokenize(model_id, texts))

    async def default_label_vectors(self, model_id: str) -> FloatArray:
        """The model's default label set's vectors (its prompts' mean each), made once."""
        if model_id not in self._default_labels:
            model = self.registry.text_model(model_id, "labels_model")
            assert model.zero_shot is not None
            labels = model.zero_shot.labels
            prompts = await self.embed_texts(model_id, model.zero_shot.prompts(labels))
            self._default_labels[model_id] = model.zero_shot.label_vectors(prompts, len(labels))
        return self._default_labels[model_id]

    async def warm_up(self) -> None:
        """One real image through every model, decode included (first-run allocations; /readyz);
        and one text through every text tower."""
        for model in self.registry.models:
            [vector] = await self.embed_all([_warm_up_png()], ["warm_up"], model.id, account=None)
            if vector.shape != (model.dimensions,) or not np.isfinite(vector).all():
                raise RuntimeError(f"warm-up of {model.id} gave a bad embedding {vector.shape}")
            if model.text_encoder is not None:
                [text] = await self.embed_texts(model.id, ["warm up"])
                if text.shape != (model.dimensions,) or not np.isfinite(text).all():
                    raise RuntimeError(f"warm-up of {model.id}'s text tower gave {text.shape}")

    # --- the stages -------------------------------------------------------------------------

    async def run(
        self,
        images: Sequence[bytes],
        plan: Plan,
        params: Sequence[str] | None = None,
        *,
        account: str | None,
    ) -> list[Processed | ApiError]:
        """pre, then core."""
        inspections = await self.pre(images, plan, params, account=account)
        return await self.core(images, inspections, plan, params)

    async def pre(
        self,
        images: Sequence[bytes],
        plan: Plan,
        params: Sequence[str] | None = None,
        *,
        account: str | None,
    ) -> list[Inspection | ApiError]:
        """Decode and measure every image in the worker pool; an image's failure stays with
        that image, but a failure of the decoder itself (503 `decoder_unavailable`) fails the
        call. The call as a whole is first admitted on its decode cost, read from the headers
        (422 `request_too_complex`, 429 `decode_budget_exceeded`: `Decoder.admit`)."""
        side = max((self.registry.get(m).working_side for m in plan.models), default=MEASURES_SIDE)
        detail_side = DETAIL_WORKING_SIDE if plan.detail else 0
        limits = self.decoder.limits
        costs = [inspection_cost(data, limits, side, detail_side) for data in images]
        self.decoder.admit(account, costs)
        results = await asyncio.gather(
            *(
                self.decoder.run(
                    inspect_image,
                    data,
                    limits,
                    side,
                    plan.measures,
                    plan.max_colors,
                    detail_side,
                    account=account,
                    cost=cost,
                )
                for data, cost in zip(images, costs, strict=True)
            ),
            return_exceptions=True,
        )
        inspections: list[Inspection | ApiError] = []
        for result in results:
            if not isinstance(result, Inspection | ApiError):
                raise result
            if isinstance(result, ApiError) and result.status >= 500:
                raise result  # the server failed, not the image: the whole call is to be retried
            inspections.append(result)
        if params is not None:
            every_or_first_error(inspections, params)
        return inspections

    async def core(
        self,
        images: Sequence[bytes],
        inspections: Sequence[Inspection | ApiError],
        plan: Plan,
        params: Sequence[str] | None = None,
    ) -> list[Processed | ApiError]:
        """Every planned model over every decoded image, through the backend, concurrently."""
        decoded = [item for item in inspections if isinstance(item, Inspection)]
        outputs: list[list[Rows | ApiError]] = [[] for _ in plan.models]
        if decoded:
            chosen = [
                data
                for data, item in zip(images, inspections, strict=True)
                if isinstance(item, Inspection)
            ]
            outputs = list(
                await asyncio.gather(
                    *(self._infer(self.registry.get(m), chosen, decoded) for m in plan.models)
                )
            )
        results: list[Processed | ApiError] = []
        positions = iter(range(len(decoded)))  # each decoded image's row in every output
        for inspection in inspections:
            if isinstance(inspection, ApiError):
                results.append(inspection)
                continue
            position = next(positions)
            rows = {m: output[position] for m, output in zip(plan.models, outputs, strict=True)}
            failed = [row for row in rows.values() if isinstance(row, ApiError)]
            good = {m: row for m, row in rows.items() if not isinstance(row, ApiError)}
            results.append(failed[0] if failed else Processed(inspection, good))
        if params is not None:
            every_or_first_error(results, params)
        return results

    async def _infer(
        self, model: ImageModel, images: Sequence[bytes], inspections: Sequence[Inspection]
    ) -> list[Rows | ApiError]:
        """One model's rows for decoded images, through the backend (core): their bytes, their
        pixels (a local backend preprocesses each batch in its runner), or their tensors."""
        items: list[ModelInput]
        if self.backend.inputs == "images":
            items = list(images)
        elif self.backend.inputs == "pixels":
            items = [item.image.pixels for item in inspections]
        else:
            items = list(
                await asyncio.gather(
                    *(
                        asyncio.to_thread(model.preprocess, item.image.pixels)
                        for item in inspections
                    )
                )
            )
        return await self.backend.infer(model.id, items)

    async def _per_image(
        self,
        component: LazyComponent[Any],
        method: str,
        inspections: Sequence[Inspection | ApiError],
        wanted: bool,
    ) -> list[Any]:
        """OCR or face detection on each decoded image (None for the others, or for all when
        not `wanted`), beside core: their own engines, not batched. Boxes are in the original
        image's coordinates."""
        if not wanted or not any(isinstance(item, Inspection) for item in inspections):
            return [None] * len(inspections)
        instance = await asyncio.to_thread(component.get)
        run = getattr(instance, method)

        async def one(item: Inspection | ApiError) -> Any:
            if isinstance(item, ApiError):
                return None
            pixels = (item.detail or item.image).pixels
            return await asyncio.to_thread(run, pixels, (item.image.width, item.image.height))

        return list(await asyncio.gather(*(one(item) for item in inspections)))


def build_pipeline(
    decoder: Decoder, registry: ModelRegistry, backend: InferenceBackend, policy: SessionPolicy
) -> Pipeline:
    """A pipeline whose OCR and face components load on first use, under the session policy."""
    return Pipeline(
        decoder,
        registry,
        backend,
        LazyComponent(lambda: TextReader(policy)),
        LazyComponent(lambda: FaceDetector(policy)),
    )


@functools.cache
def _warm_up_png() -> bytes:
    """A small gradient rather than zeros: exercises the normal path, not a degenerate input."""
    ramp = np.linspace(0, 255, 32 * 32 * 3).astype(np.uint8).reshape(32, 32, 3)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    return buffer.getvalue()

"""The core stage's seam: the `InferenceBackend` contract, and `LocalBackend`, its in-process
implementation (ONNX Runtime sessions behind one micro-batcher per model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

from dupify.analysis.pixels import require_rgb
from dupify.config import InferenceSettings
from dupify.errors import ApiError
from dupify.inference.batcher import BatcherStats, MicroBatcher, Rows
from dupify.inference.models.base import Array, text_tower_id
from dupify.inference.registry import ModelRegistry
from dupify.inference.session import SessionPolicy

# What `infer` takes for every model: "pixels", each image as decoded at the model's working
# side; "tensors", each the output of the model's `preprocess`; or "images", each an upload's
# bytes as received.
InputKind = Literal["pixels", "tensors", "images"]
ModelInput = Array | bytes


class InferenceBackend(Protocol):
    """Runs one model over the images of one call: the pipeline's *core* stage.

    The contract below is what makes an answer mean the same thing whichever backend gives it
    (this process, or GPU workers reached over HTTP):

    Inputs. `inputs` says what `infer` receives. With "pixels" the pipeline has decoded each image
    at the model's working side (`DecodedImage.pixels`), and the backend runs the model's
    `preprocess` itself (its `preprocess_batch`, the same values). With "tensors" the pipeline
    has also run the model's `preprocess`. With "images" it sends each upload's bytes unchanged,
    after its own decode accepted them; the backend must then decode with
    `dupify.images.decoding.decode_image` under the same limits at the model's working side and
    run the same `preprocess`, so that vectors are bit-identical and cached results stay valid.
    A model with a text tower is also served as `text_tower_id(model_id)`, whose items are
    always token rows (its text encoder's `tokenize`), whatever `inputs` says.

    Outputs. `infer` returns one entry per input, in input order: either that item's row of
    every output the model's `predict` names (`EMBEDDING`, unit-norm float32, among them), or
    an `ApiError` for that item alone (e.g. `invalid_image` from a backend that decodes). The
    pipeline treats an item's error exactly like a decode failure of that image: its own entry
    in `/v1/analyze`, the request's error (named by its param) in `/v1/embeddings`,
    `/v1/compare` and `/v1/duplicates`.

    Overload. Admission is all or none per call. A backend that cannot take a whole call now
    raises `ApiError("overloaded")` (503) with a `Retry-After` header at once rather than
    queueing without bound; one that is starting or stopping raises `not_ready` (503, with
    `Retry-After`).

    Time. A backend has its own deadline and never lets a bare `TimeoutError` or transport
    error escape: past it, it raises a 503 `ApiError` with `Retry-After` (remote backends:
    `inference_unavailable`, API.md section 11). The pipeline sets no deadline of its own.

    Cancellation. When the caller is cancelled (the client went away), the items of its call
    that have not run yet are dropped; rows never reach another call.

    Anything else a backend raises is a bug, answered as a 500.
    """

    @property
    def inputs(self) -> InputKind:
        """What `infer` takes for every model (see the class docstring)."""
        ...

    async def start(self) -> None:
        """Begin accepting calls."""
        ...

    async def stop(self) -> None:
        """Refuse new calls, answer every call already accepted, then release resources."""
        ...

    async def infer(self, model_id: str, items: Sequence[ModelInput]) -> list[Rows | ApiError]:
        """One entry per item, in order (see the class docstring)."""
        ...

    def stats(self) -> dict[str, BatcherStats]:
        """Each model's batching figures, for /metrics: `items` counts images run, one per
        image however many outputs callers read from its pass."""
        ...


class LocalBackend:
    """The registry's models run in this process: one `MicroBatcher` per model, each batch a
    `predict` on the model's ONNX Runtime session in the batcher's own thread.

    It takes "pixels" (the pipeline's way): each runner preprocesses its batch's images
    straight into the batch it feeds `predict`, in its own thread, rather than each image in a
    thread of its own and the tensors then stacked: one hop and two copies less per image
    (docs/performance.md, "Levers"). A GPU worker, handed tensors over the wire, and the remote
    backend's fallback, handed what the remote backend takes, use "tensors".
    """

    def __init__(
        self, registry: ModelRegistry, settings: InferenceSettings, inputs: InputKind = "pixels"
    ) -> None:
        if inputs == "images":
            raise ValueError("LocalBackend takes pixels or tensors, not image bytes")
        self.inputs: InputKind = inputs
        self._registry = registry
        runners = SessionPolicy.from_settings(settings).batches
        pixels = inputs == "pixels"
        self._batchers = {
            model.id: MicroBatcher(
                model.predict,
                max_batch=settings.max_batch,
                max_wait_ms=settings.max_wait_ms,
                queue_size=settings.queue_size,
                retry_after_s=settings.overload_retry_after_s,
                name=model.id,
                item_shape=None if pixels else tuple(model.input_shape),
                concurrency=runners,
                assemble=model.preprocess_batch if pixels else np.stack,
            )
            for model in registry.models
        }
        # A model with a text tower gets a second batcher for it: texts of concurrent requests
        # are batched together, apart from images (dupify.inference.models.tokens).
        for model in registry.models:
            if model.text_encoder is not None:
                self._batchers[text_tower_id(model.id)] = MicroBatcher(
                    model.text_encoder.predict,
                    max_batch=settings.max_batch,
                    max_wait_ms=settings.max_wait_ms,
                    queue_size=settings.queue_size,
                    retry_after_s=settings.overload_retry_after_s,
                    name=text_tower_id(model.id),
                    item_shape=tuple(model.text_encoder.input_shape),
                    concurrency=runners,
                )

    async def start(self) -> None:
        for batcher in self._batchers.values():
            await batcher.start()

    async def stop(self) -> None:
        """Drain every batcher: calls already accepted still get their answers."""
        for batcher in self._batchers.values():
            await batcher.stop()

    async def infer(self, model_id: str, items: Sequence[ModelInput]) -> list[Rows | ApiError]:
        if model_id not in self._batchers:
            self._registry.get(model_id)  # model_not_found for an id this process does not serve
        arrays = [item for item in items if isinstance(item, np.ndarray)]
        if len(arrays) != len(items):
            raise TypeError(f"LocalBackend takes {self.inputs}, not image bytes")
        if self.inputs == "pixels" and model_id in self._registry:
            for pixels in arrays:
                require_rgb(pixels)  # a bad item fails its own call, not a batch
        return list(await self._batchers[model_id].submit_many(arrays))

    def stats(self) -> dict[str, BatcherStats]:
        return {model_id: batcher.stats() for model_id, batcher in self._batchers.items()}

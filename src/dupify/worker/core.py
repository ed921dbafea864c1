"""What every form of the worker runs for one job: validate the payload strictly, run the
registry's model through the in-process backend, encode the outputs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from dupify.config import Settings
from dupify.errors import ApiError
from dupify.inference.backend import LocalBackend, ModelInput
from dupify.inference.models.base import text_tower_id
from dupify.inference.registry import ModelRegistry, roles_for
from dupify.inference.wire import WireError, decode_job, encode_outputs

log = logging.getLogger("dupify.worker")


class JobRefused(Exception):
    """A job the worker will not run; the message is the job's error, safe to return."""


class WorkerCore:
    """The models (the same registry and session policy as `dupify serve`: CPU or CUDA by
    DUPIFY_INFERENCE__DEVICE) behind a `LocalBackend`, whose micro-batchers also batch
    concurrent jobs. One per process; `start` binds it to the running event loop."""

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or ModelRegistry(settings.inference, roles=roles_for(settings))
        # A whole job must fit a model's queue at once (all-or-none admission).
        queue = max(settings.inference.queue_size, 2 * settings.worker.max_items)
        self._inference = settings.inference.model_copy(update={"queue_size": queue})
        self._backend: LocalBackend | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> str:
        devices = sorted({model.session.device for model in self.registry.models})
        return f"models {', '.join(self.registry.ids)} on {', '.join(devices)}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._backend is not None and self._loop is loop:
            return
        if self._backend is not None:
            await self._backend.stop()  # bound to a loop that is gone
        self._backend = LocalBackend(self.registry, self._inference, inputs="tensors")
        await self._backend.start()
        self._loop = loop

    async def stop(self) -> None:
        if self._backend is not None:
            await self._backend.stop()
            self._backend = None

    def _input_spec(self, model_id: str) -> tuple[tuple[int, ...], str] | None:
        """One row's shape and dtype: an image tower's tensor, or a text tower's token rows."""
        for model in self.registry.models:
            if model.id == model_id:
                return tuple(model.input_shape), "float32"
            if model.text_encoder is not None and text_tower_id(model.id) == model_id:
                return tuple(model.text_encoder.input_shape), "int64"
        return None

    async def run(self, job_input: object) -> dict[str, Any]:
        """The job's output, or JobRefused saying why (bad input, or busy)."""
        await self.start()
        assert self._backend is not None
        try:
            model_id, batch = await asyncio.to_thread(
                decode_job, job_input, self._input_spec, self.settings.worker.max_items
            )
        except WireError as exc:
            raise JobRefused(f"invalid job: {exc}") from None
        items: list[ModelInput] = list(batch)
        try:
            rows = await self._backend.infer(model_id, items)
        except ApiError as exc:  # overloaded or not_ready: the caller retries elsewhere or later
            raise JobRefused(f"{exc.code}: {exc.message}") from None
        failed = [row for row in rows if isinstance(row, ApiError)]
        if failed:
            raise JobRefused(f"{failed[0].code}: {failed[0].message}")
        good = [row for row in rows if not isinstance(row, ApiError)]
        outputs = {key: np.stack([row[key] for row in good]) for key in good[0]}
        return await asyncio.to_thread(encode_outputs, model_id, outputs, len(good))

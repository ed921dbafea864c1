"""Test doubles of the `InferenceBackend` seam: a pass-through in front of the session's real
backend, which tests subclass to watch or alter what `infer` does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dupify.errors import ApiError
from dupify.inference.backend import InferenceBackend, InputKind, ModelInput
from dupify.inference.batcher import BatcherStats, Rows


@dataclass
class PassThroughBackend:
    """A backend in front of the session's real one; subclasses change what `infer` does."""

    inner: InferenceBackend

    @property
    def inputs(self) -> InputKind:
        return self.inner.inputs

    async def start(self) -> None:
        """Nothing: the wrapped backend is the session's, started and stopped by its fixture."""

    async def stop(self) -> None:
        """Nothing, as for `start`."""

    async def infer(self, model_id: str, items: Sequence[ModelInput]) -> list[Rows | ApiError]:
        return await self.inner.infer(model_id, items)

    def stats(self) -> dict[str, BatcherStats]:
        return self.inner.stats()

"""The one session policy: which execution providers and how many threads every model gets,
and the ONNX Runtime session it opens with them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# ONNX Runtime's telemetry starts when the library is first imported: it writes a device id and a
# queue of usage events (SQLite) under ~/.cache/Microsoft/DeveloperTools/.onnxruntime, to upload
# them. Only this variable, set before that import, stops it there; the call below also stops the
# events in a process that imported onnxruntime before us. Every session here and RapidOCR's own
# (models.text) come from the onnxruntime imported through this module.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
import onnxruntime as ort

from dupify.config import InferenceSettings, available_cores

ort.disable_telemetry_events()

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
DEVICES = ("cpu", "cuda", "auto")


def providers_for(device: str) -> list[str]:
    """The execution providers to ask ONNX Runtime for, best first, for a configured device.

    "cuda" keeps the CPU provider as a fallback for the few operators CUDA lacks; whether CUDA
    itself is usable is checked when a session is created, not here.
    """
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "cuda":
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "auto":
        if CUDA_PROVIDER in ort.get_available_providers():
            return [CUDA_PROVIDER, CPU_PROVIDER]
        return [CPU_PROVIDER]
    raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")


@dataclass(frozen=True)
class SessionPolicy:
    """Where and how wide inference runs; every model, OCR and face detection included, gets
    its sessions and thread counts from here and nowhere else."""

    device: str = "cpu"
    intra_op_threads: int = 0  # 0 = the cores available to this process / `batches`
    # ONNX Runtime's intra-op threads spin for a while after each call by default, holding cores
    # the decoder processes and the event loop need between batches; off unless asked for.
    spin_wait: bool = False
    concurrent_batches: int = 0  # 0 = one per available core on a CPU, one on a GPU

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0 or self.concurrent_batches < 0:
            raise ValueError("intra_op_threads and concurrent_batches must be >= 0 (0 = auto)")
        providers_for(self.device)  # an unknown device fails here, not at the first load

    @classmethod
    def from_settings(cls, settings: InferenceSettings) -> SessionPolicy:
        return cls(
            device=settings.device,
            intra_op_threads=settings.intra_op_threads,
            spin_wait=settings.spin_wait,
            concurrent_batches=settings.concurrent_batches,
        )

    @property
    def batches(self) -> int:
        """How many batches of one model run at once (the micro-batcher's runners).

        On a CPU, one per core, each single-threaded: a batch spread over every core waits at
        each of its operators for the slowest thread, and on a small machine a thread is often
        slow, because the decoders and the event loop share its cores; independent batches
        lose no time to that, and a single thread runs a small batch as fast per image as a
        large one (docs/performance.md, "Levers"). A GPU runs one batch at a time.
        """
        if self.concurrent_batches:
            return self.concurrent_batches
        return 1 if self.device != "cpu" and self.uses_cuda() else available_cores()

    @property
    def threads(self) -> int:
        """The intra-op threads of one model session: the cores shared among `batches`.

        ORT's default (0) also means "all cores", but it counts the host's physical cores and
        ignores the affinity mask, which oversubscribes containers; so it is resolved here.
        """
        return self.intra_op_threads or max(1, available_cores() // self.batches)

    @property
    def exclusive_threads(self) -> int:
        """The threads of a component that runs one call at a time (OCR, face detection)."""
        return self.intra_op_threads or available_cores()

    def providers(self) -> list[str]:
        """The providers to request; "cuda" on a build without CUDA fails here, clearly."""
        if self.device == "cuda" and CUDA_PROVIDER not in ort.get_available_providers():
            raise RuntimeError(
                "device 'cuda' was requested but this ONNX Runtime build has no "
                f"CUDAExecutionProvider (available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu instead of onnxruntime, or set DUPIFY_INFERENCE__DEVICE "
                "to 'cpu' or 'auto'"
            )
        return providers_for(self.device)

    def uses_cuda(self) -> bool:
        """Whether sessions made under this policy ask for CUDA first."""
        return CUDA_PROVIDER in self.providers()

    def session(self, model: bytes | str | os.PathLike[str]) -> OrtSession:
        """An inference session on a serialised model or a model file."""
        return OrtSession(model, self)


class OrtSession:
    """One ONNX Runtime inference session with explicit threads and a checked provider list."""

    def __init__(self, model: bytes | str | os.PathLike[str], policy: SessionPolicy) -> None:
        requested = policy.providers()
        options = ort.SessionOptions()
        self.intra_op_threads = policy.threads
        options.intra_op_num_threads = self.intra_op_threads
        # One graph at a time per session; parallelism comes from intra-op threads and batching.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = "1" if policy.spin_wait else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        self.spin_wait = policy.spin_wait

        model_arg: bytes | str = model if isinstance(model, bytes) else os.fspath(model)
        self._session = ort.InferenceSession(model_arg, sess_options=options, providers=requested)
        self.providers: list[str] = list(self._session.get_providers())
        # A GPU build whose CUDA libraries fail to load silently falls back to CPU; an operator who
        # asked for "cuda" must learn that at start-up, not from a slow server.
        if policy.device == "cuda" and CUDA_PROVIDER not in self.providers:
            raise RuntimeError(
                "device 'cuda' was requested but ONNX Runtime could not initialise the CUDA "
                f"provider (session uses {', '.join(self.providers)}); check the CUDA and cuDNN "
                "libraries, or set DUPIFY_INFERENCE__DEVICE to 'cpu' or 'auto'"
            )
        self.device = "cuda" if CUDA_PROVIDER in self.providers else "cpu"
        self.input_names: list[str] = [node.name for node in self._session.get_inputs()]
        self.output_names: list[str] = [node.name for node in self._session.get_outputs()]

    def run(
        self, outputs: Sequence[str] | None, feeds: Mapping[str, npt.NDArray[Any]]
    ) -> list[npt.NDArray[Any]]:
        """Run the graph; `outputs` None means every graph output, in graph order.

        Thread-safe (ONNX Runtime allows concurrent `run` calls on one session).
        """
        results = self._session.run(list(outputs) if outputs is not None else None, dict(feeds))
        return [np.asarray(result) for result in results]

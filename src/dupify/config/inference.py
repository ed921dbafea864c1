"""Settings for how models run: in this process (device, threads, batching), or on remote GPU
workers (RunPod), and the worker's own limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from dupify.config.common import MiB


class InferenceSettings(BaseModel):
    """How models run: device, threads and micro-batching."""

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    intra_op_threads: int = Field(
        0, ge=0, description="threads of one model run; 0 = available cores / concurrent_batches"
    )
    concurrent_batches: int = Field(
        0, ge=0, description="batches of one model run at once; 0 = one per core on CPU, 1 on GPU"
    )
    spin_wait: bool = Field(False, description="ORT threads spin-wait; off: cores left to decoders")
    decode_workers: int = Field(0, ge=0, description="decoder processes; 0 = one per core")
    max_batch: int = Field(16, gt=0)
    max_wait_ms: float = Field(5.0, ge=0)
    queue_size: int = Field(256, gt=0)
    overload_retry_after_s: int = Field(1, gt=0)
    model_cache_dir: Path | None = Field(
        None,
        description="where built models are cached (dupify-semantic-1's ONNX graph); "
        "None = $XDG_CACHE_HOME/dupify or ~/.cache/dupify",
    )
    # Where models run (docs/deployment.md): "local" in this process, "runpod" on GPU workers
    # behind a RunPod Serverless endpoint or `dupify worker serve` (DUPIFY_RUNPOD__*).
    backend: Literal["local", "runpod"] = "local"
    fallback: Literal["none", "local"] = Field(
        "none", description="with backend=runpod: run in this process while the remote is down"
    )


class RunpodSettings(BaseModel):
    """The remote inference backend (DUPIFY_INFERENCE__BACKEND=runpod): where the job endpoint
    is, its key, and how jobs are batched, bounded in time and given up on (inference.remote)."""

    endpoint_url: str | None = Field(
        None, description="e.g. https://api.runpod.ai/v2/<endpoint id>, or a worker's base URL"
    )
    api_key: SecretStr | None = None
    api_key_file: Path | None = Field(None, description="a file holding the key, instead")
    allow_http: bool = Field(
        False, description="plain http to a non-loopback endpoint (a private network only)"
    )
    timeout_s: float = Field(30.0, gt=0, description="one call's deadline, cold start included")
    connect_timeout_s: float = Field(5.0, gt=0)
    max_batch: int = Field(16, gt=0, description="images of one model in one job")
    max_wait_ms: float = Field(10.0, ge=0, description="how long a job waits for company")
    # RunPod refuses a /runsync body over 20 MB; jobs over this are split before sending.
    max_payload_bytes: int = Field(19_000_000, gt=1024)
    max_jobs_in_flight: int = Field(8, gt=0, description="per model")
    retry_after_s: int = Field(5, gt=0, description="the Retry-After of inference_unavailable")
    breaker_failures: int = Field(3, gt=0, description="failed jobs in a row that open it")
    breaker_reset_s: float = Field(10.0, gt=0, description="open this long, then one probe")

    def key(self) -> str | None:
        """The API key, from the setting or the file (read at start-up, never logged)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip() or None
        return None


class WorkerSettings(BaseModel):
    """The GPU worker (`dupify worker`, `dupify worker serve`): what one job may carry and how
    the self-hosted job server holds jobs (dupify.worker)."""

    max_items: int = Field(256, gt=0, description="images in one job")
    # Jobs one RunPod worker takes at once: concurrent jobs share the models' micro-batches.
    concurrency: int = Field(4, gt=0, description="jobs a `dupify worker` runs at once")
    max_body_bytes: int = Field(24 * MiB, gt=0, description="the job server's request cap")
    max_jobs: int = Field(64, gt=0, description="jobs queued or running; more get 429")
    sync_wait_s: float = Field(60.0, gt=0, description="/runsync holds this long, then IN_PROGRESS")
    result_ttl_s: float = Field(60.0, gt=0, description="a finished job's result is kept this long")

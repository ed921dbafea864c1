"""The RunPod Serverless handler: `python -m dupify.worker.handler` (what `dupify worker` runs)
loads the models, then hands `handler` to `runpod.serverless.start`; the SDK's flags
(`--rp_serve_api --rp_api_host --rp_api_port`) serve it locally for testing."""

from __future__ import annotations

import logging
import os
from typing import Any

from dupify.config import Settings
from dupify.worker.core import JobRefused, WorkerCore

log = logging.getLogger("dupify.worker")
_core: WorkerCore | None = None


def load(settings: Settings | None = None) -> WorkerCore:
    """Load the models once per process, before the first job (and before FlashBoot's
    snapshot), so a bad model or device fails the worker at start, not a job."""
    global _core
    if _core is None:
        _core = WorkerCore(settings or Settings())
        log.info("worker ready: %s", _core.describe())
    return _core


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """One RunPod job: `{"id": ..., "input": <inference.wire job>}` -> the wire output, or
    `{"error": ...}` (the SDK marks the job FAILED with that message). Never raises for bad
    input; an unexpected exception is logged here and answered without its traceback."""
    core = load()
    try:
        return await core.run(job.get("input") if isinstance(job, dict) else None)
    except JobRefused as exc:
        return {"error": str(exc)}
    except Exception:
        log.exception("job failed")
        return {"error": "internal worker error"}


def main() -> None:
    """Start the RunPod worker (on RunPod: its job queue; with --rp_serve_api: a local API)."""
    # The SDK logs every job's output at DEBUG, its default: vectors stay out of the logs.
    if os.environ.get("RUNPOD_LOG_LEVEL", "").upper() not in ("INFO", "WARN", "ERROR"):
        os.environ["RUNPOD_LOG_LEVEL"] = "INFO"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    core = load()
    import runpod  # the optional `worker` extra; imported late so the CLI works without it

    concurrency = core.settings.worker.concurrency
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda _: concurrency})


if __name__ == "__main__":
    main()

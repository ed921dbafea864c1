"""`dupify worker serve`: the worker's jobs over plain HTTP, in RunPod Serverless' job protocol
(POST /runsync and /run, GET or POST /status/{id}, POST /cancel/{id}, GET /health), so GPU boxes
behind any load balancer serve the remote backend as a RunPod endpoint does."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from dupify.config import Settings, WorkerSettings
from dupify.worker.core import JobRefused, WorkerCore

log = logging.getLogger("dupify.worker.http")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
DONE = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class Job:
    id: str
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    task: asyncio.Task[None] | None = None

    def view(self) -> dict[str, Any]:
        """The job as RunPod answers it (times in milliseconds)."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = round((self.started - self.created) * 1000)
            if self.finished is not None:
                body["executionTime"] = round((self.finished - self.started) * 1000)
        if self.status == "COMPLETED":
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


class JobServer:
    """An ASGI app holding at most `max_jobs` unfinished jobs (more: 429). /runsync waits up to
    `sync_wait_s` and then answers IN_PROGRESS, to be followed on /status. A result is dropped
    once delivered, or `result_ttl_s` after the job ended if nobody asked; nothing of a job is
    written anywhere. With a key configured (DUPIFY_RUNPOD__API_KEY), every route but /health
    needs `Authorization: Bearer <key>`."""

    def __init__(self, core: WorkerCore, settings: WorkerSettings, key: str | None) -> None:
        self.core = core
        self.settings = settings
        self._key = f"Bearer {key}".encode() if key else None
        self.jobs: dict[str, Job] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, body = await self._route(scope, receive)
        except HttpError as exc:
            status, body = exc.status, {"error": exc.message}
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.core.start()
                log.info("worker serving %s", self.core.describe())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for job in list(self.jobs.values()):
                    if job.task is not None:
                        job.task.cancel()
                await self.core.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        method, parts = scope["method"], scope["path"].strip("/").split("/")
        if parts == ["health"] and method == "GET":
            states = [job.status for job in self.jobs.values()]
            counts = {state: states.count(state) for state in ("IN_QUEUE", "IN_PROGRESS")}
            return 200, {"status": "ok", "jobs": counts, "models": self.core.registry.ids}
        self._authorise(scope)
        if parts == ["runsync"] or parts == ["run"]:
            if method != "POST":
                raise HttpError(405, "use POST")
            job = self._submit(await self._read_input(receive))
            if parts == ["run"]:
                return 200, job.view()
            assert job.task is not None
            await asyncio.wait({job.task}, timeout=self.settings.sync_wait_s)
            return 200, self._deliver(job)
        if len(parts) == 2 and parts[0] in ("status", "cancel"):
            found = self.jobs.get(parts[1])
            if found is None:
                raise HttpError(404, "job not found")
            if parts[0] == "status" and method in ("GET", "POST"):
                return 200, self._deliver(found)
            if parts[0] == "cancel" and method == "POST":
                if found.status not in DONE and found.task is not None:
                    found.task.cancel()
                    found.status, found.finished = "CANCELLED", time.monotonic()
                    self._forget_later(found)
                return 200, {"id": found.id, "status": found.status}
            raise HttpError(405, "method not allowed")
        raise HttpError(404, "no such route")

    def _authorise(self, scope: Scope) -> None:
        if self._key is None:
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self._key):
            raise HttpError(401, "missing or wrong Authorization: Bearer key")

    async def _read_input(self, receive: Receive) -> object:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.settings.max_body_bytes:
                raise HttpError(413, f"a job is at most {self.settings.max_body_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "the body is not JSON") from None
        if not isinstance(body, dict) or "input" not in body:
            raise HttpError(400, 'the body must be a JSON object with an "input" field')
        return body["input"]

    def _submit(self, job_input: object) -> Job:
        if sum(job.status not in DONE for job in self.jobs.values()) >= self.settings.max_jobs:
            raise HttpError(429, "the worker's job queue is full; retry later")
        job = Job(id=f"job-{secrets.token_hex(12)}")
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._execute(job, job_input), name=job.id)
        return job

    async def _execute(self, job: Job, job_input: object) -> None:
        job.status, job.started = "IN_PROGRESS", time.monotonic()
        try:
            job.output = await self.core.run(job_input)
            job.status = "COMPLETED"
        except JobRefused as exc:
            job.status, job.error = "FAILED", str(exc)
        except asyncio.CancelledError:
            job.status = "CANCELLED"
        except Exception:
            log.exception("job %s failed", job.id)
            job.status, job.error = "FAILED", "internal worker error"
        finally:
            job.finished = time.monotonic()
            self._forget_later(job)

    def _deliver(self, job: Job) -> dict[str, Any]:
        view = job.view()
        if job.status in DONE:
            self.jobs.pop(job.id, None)  # delivered: the result is not kept
        return view

    def _forget_later(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self.settings.result_ttl_s, self.jobs.pop, job.id, None)


def serve(settings: Settings, host: str, port: int) -> None:
    """Load the models, then serve jobs until interrupted."""
    core = WorkerCore(settings)
    app = JobServer(core, settings.worker, settings.runpod.key())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()

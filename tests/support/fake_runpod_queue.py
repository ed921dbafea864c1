"""Test helper: a stand-in for RunPod Serverless' queue (its cloud cannot run here), on a real
socket on 127.0.0.1, speaking both of its sides: the public job routes the API tier calls
(`/v2/<endpoint>/runsync`, `/status/{id}`, `/cancel/{id}`) and the worker routes the `runpod` SDK
polls in its real serverless mode (`job-take`, `job-take-batch`, `job-stop`, `job-done`, as the
SDK's rp_job.py and rp_http.py call them). So `dupify worker` runs as on RunPod: no local API."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn

from support.servers import free_port

ENDPOINT = "fake-endpoint"
LONG_POLL_S = 0.5  # job-take and job-stop hold a request open this long before 204


@dataclass(eq=False)
class CloudJob:
    id: str
    input: Any
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FakeRunpodQueue:
    public_key: str
    sync_wait_s: float = 90.0  # RunPod's default /runsync wait
    port: int = 0
    jobs: dict[str, CloudJob] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, query
    _queue: list[CloudJob] = field(default_factory=list)
    _stops: list[str] = field(default_factory=list)
    _wakeup: asyncio.Event | None = None
    _count: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/{ENDPOINT}"

    def worker_env(self) -> dict[str, str]:
        """What RunPod sets in a worker's environment, pointed here."""
        base = f"http://127.0.0.1:{self.port}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_POD_ID": "test-worker-1",
            "RUNPOD_AI_API_KEY": "internal-worker-key",
            "RUNPOD_ENDPOINT_ID": ENDPOINT,
        }

    def seen(self, prefix: str) -> list[tuple[str, str, str]]:
        return [r for r in list(self.requests) if r[1].startswith(prefix)]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        method, path = scope["method"], scope["path"]
        query = scope.get("query_string", b"").decode()
        self.requests.append((method, path, query))
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = dict(scope["headers"])
        status, answer = await self._answer(method, path, query, body, headers)
        payload = b"" if answer is None else json.dumps(answer).encode()
        kind = [(b"content-type", b"application/json")] if answer is not None else []
        await send({"type": "http.response.start", "status": status, "headers": kind})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(
        self, method: str, path: str, query: str, body: bytes, headers: dict[bytes, bytes]
    ) -> tuple[int, Any]:
        public = f"/v2/{ENDPOINT}/"
        if path.startswith(public):
            if headers.get(b"authorization") != f"Bearer {self.public_key}".encode():
                return 401, {"error": "Unauthorized"}
            return await self._public(method, path[len(public) :], body)
        if headers.get(b"authorization") != b"internal-worker-key":
            return 401, {"error": "worker not authorised"}
        if path.startswith("/job-take-batch/"):
            size = int(parse_qs(query).get("batch_size", ["1"])[0])
            jobs = await self._take(size)
            return (200, [{"id": j.id, "input": j.input} for j in jobs]) if jobs else (204, None)
        if path.startswith("/job-take/"):
            jobs = await self._take(1)
            return (200, {"id": jobs[0].id, "input": jobs[0].input}) if jobs else (204, None)
        if path.startswith("/job-stop/"):
            await self._wait_for(lambda: bool(self._stops))
            stops, self._stops[:] = list(self._stops), []
            return (200, {"jobsToStop": stops}) if stops else (204, None)
        if path.startswith("/job-done/"):
            job = self.jobs.get(path.rsplit("/", 1)[1])
            if job is not None and job.status == "IN_PROGRESS":
                result = json.loads(body)
                job.output, job.error = result.get("output"), result.get("error")
                job.status = "FAILED" if job.error else "COMPLETED"
                job.done.set()
            return 200, {}
        return 404, {"error": "not found"}

    async def _public(self, method: str, route: str, body: bytes) -> tuple[int, Any]:
        if route == "runsync" and method == "POST":
            self._count += 1
            job = CloudJob(f"sync-{self._count}", json.loads(body)["input"])
            self.jobs[job.id] = job
            self._queue.append(job)
            assert self._wakeup is not None
            self._wakeup.set()
            with suppress(TimeoutError):
                await asyncio.wait_for(job.done.wait(), self.sync_wait_s)
            return 200, self._view(job)
        kind, _, job_id = route.partition("/")
        job = self.jobs.get(job_id)
        if job is None:
            return 404, {"error": "job not found"}
        if kind == "status":
            return 200, self._view(job)
        if kind == "cancel" and method == "POST":
            if job.status == "IN_QUEUE":
                self._queue.remove(job)
            elif job.status == "IN_PROGRESS":
                self._stops.append(job.id)
                assert self._wakeup is not None
                self._wakeup.set()
            if job.status in ("IN_QUEUE", "IN_PROGRESS"):
                job.status = "CANCELLED"
                job.done.set()
            return 200, {"id": job.id, "status": job.status}
        return 404, {"error": "not found"}

    @staticmethod
    def _view(job: CloudJob) -> dict[str, Any]:
        view: dict[str, Any] = {"id": job.id, "status": job.status}
        if job.status == "COMPLETED":
            view["output"] = job.output
        if job.error:
            view["error"] = job.error
        return view

    async def _take(self, size: int) -> list[CloudJob]:
        await self._wait_for(lambda: bool(self._queue))
        taken, self._queue[:] = self._queue[:size], self._queue[size:]
        for job in taken:
            job.status = "IN_PROGRESS"
        return taken

    async def _wait_for(self, ready: Any) -> None:
        """Long poll: until `ready()` or LONG_POLL_S, as RunPod holds these requests."""
        assert self._wakeup is not None
        deadline = time.monotonic() + LONG_POLL_S
        while not ready() and time.monotonic() < deadline:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), deadline - time.monotonic())
            except TimeoutError:
                break


@contextmanager
def running_queue(public_key: str) -> Iterator[FakeRunpodQueue]:
    cloud = FakeRunpodQueue(public_key, port=free_port())
    config = uvicorn.Config(
        cloud, host="127.0.0.1", port=cloud.port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise AssertionError("the fake RunPod queue did not start")
        time.sleep(0.05)
    try:
        yield cloud
    finally:
        server.should_exit = True
        thread.join(timeout=30)

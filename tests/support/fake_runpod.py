"""Test helper: a stand-in for RunPod's cloud endpoint (which cannot run here), speaking its job
protocol over a real socket on 127.0.0.1: /runsync, GET /status/{id}, POST /cancel/{id}. Jobs it
completes are run by the real worker core on the real models; a test scripts how it misbehaves
(queueing, hanging, 429, 500, failed or malformed jobs) and reads every request it got."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from dupify.worker.core import JobRefused, WorkerCore
from support.servers import free_port

MODES = ("ok", "queued", "queued-forever", "hang", "429", "500", "failed", "malformed")


@dataclass
class FakeEndpoint:
    core: WorkerCore
    mode: str = "ok"
    polls_before_done: int = 2
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth
    policies: list[Any] = field(default_factory=list)  # each /runsync's `policy`
    _jobs: dict[str, Any] = field(default_factory=dict)
    _polls: dict[str, int] = field(default_factory=dict)
    url: str = ""

    def seen(self, method: str, prefix: str) -> list[str]:
        return [
            path for m, path, _ in list(self.requests) if m == method and path.startswith(prefix)
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        self.requests.append((method, path, auth))
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, answer = await self._answer(method, path, body)
        payload = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _run(self, job_input: Any) -> dict[str, Any]:
        try:
            return {"status": "COMPLETED", "output": await self.core.run(job_input)}
        except JobRefused as exc:
            return {"status": "FAILED", "error": str(exc)}

    async def _answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        mode = self.mode
        if path.startswith("/cancel/"):
            return 200, {"id": path.rsplit("/", 1)[1], "status": "CANCELLED"}
        if path.startswith("/status/"):
            job_id = path.rsplit("/", 1)[1]
            self._polls[job_id] = self._polls.get(job_id, 0) + 1
            if mode == "queued" and self._polls[job_id] >= self.polls_before_done:
                return 200, {"id": job_id, **await self._run(self._jobs.pop(job_id))}
            return 200, {"id": job_id, "status": "IN_PROGRESS"}
        if path != "/runsync" or method != "POST":
            return 404, {"error": "not found"}
        request = json.loads(body)
        self.policies.append(request.get("policy"))
        job_input = request["input"]
        job_id = f"fake-{len(self.requests)}"
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode in ("429", "500"):
            return int(mode), {"error": "simulated"}
        if mode == "failed":
            return 200, {"id": job_id, "status": "FAILED", "error": "handler raised"}
        if mode in ("queued", "queued-forever"):
            self._jobs[job_id] = job_input
            return 200, {"id": job_id, "status": "IN_QUEUE"}
        answer = await self._run(job_input)
        if mode == "malformed" and answer["status"] == "COMPLETED":
            answer["output"]["outputs"]["embedding"]["data"] = "AAAA"
        return 200, {"id": job_id, **answer}


@contextmanager
def running_fake(core: WorkerCore) -> Iterator[FakeEndpoint]:
    """The fake endpoint served by uvicorn in a thread of its own, stopped on exit."""
    endpoint = FakeEndpoint(core)
    port = free_port()
    endpoint.url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(
        endpoint, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise AssertionError("the fake endpoint did not start")
        time.sleep(0.05)
    try:
        yield endpoint
    finally:
        server.should_exit = True
        thread.join(timeout=30)

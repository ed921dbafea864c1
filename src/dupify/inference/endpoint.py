"""The client of a RunPod Serverless endpoint's job routes (or of `dupify worker serve`, which
speaks the same protocol): run a job synchronously, follow it while queued, cancel it."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import httpx

log = logging.getLogger("dupify.inference.endpoint")

WAITING = frozenset({"IN_QUEUE", "IN_PROGRESS"})
MIN_TTL_MS = 10_000  # the shortest job TTL RunPod accepts
TTL_MARGIN_MS = 5_000  # a job outlives our deadline by this much, so its cancel still finds it
FIRST_POLL_S = 0.05
MAX_POLL_S = 1.0


class JobFailed(Exception):
    """A job that gave no output: the reason is for the operator's log, never for clients."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out  # the deadline passed with no answer


class Endpoint:
    """`run` posts `{"input": ..., "policy": {"ttl": ...}}` to `{endpoint}/runsync`; while the
    job is IN_QUEUE or IN_PROGRESS it follows `GET {endpoint}/status/{id}` (backing off to one
    poll a second) until the deadline; a job left unfinished, by the deadline or by a caller that
    went away, is cancelled with `POST {endpoint}/cancel/{id}`. Every failure is a `JobFailed`."""

    def __init__(self, url: str, key: str | None, connect_timeout_s: float) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self._connect_timeout_s = connect_timeout_s
        # No read timeout of its own: every call runs under its job's deadline instead.
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(None, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            follow_redirects=False,
            trust_env=False,  # no proxy or .netrc from the environment: the URL is the setting
        )
        self._cancels: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        if self._cancels:
            await asyncio.wait(set(self._cancels), timeout=self._connect_timeout_s)
        await self._client.aclose()

    async def run(self, job_input: dict[str, Any], deadline: float) -> Any:
        """The job's output; `deadline` is in the running loop's clock."""
        job_id: str | None = None
        finished = False
        try:
            async with asyncio.timeout_at(deadline):
                body = self._answer(
                    await self._client.post("/runsync", json=self._request(job_input, deadline))
                )
                job_id = body.get("id") if isinstance(body.get("id"), str) else None
                delay = FIRST_POLL_S
                while body.get("status") in WAITING:
                    if job_id is None:
                        raise JobFailed(f"the endpoint queued a job without an id: {body!r:.200}")
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, MAX_POLL_S)
                    body = self._answer(await self._client.get(f"/status/{job_id}"))
                finished = True
                status = body.get("status")
                if status != "COMPLETED":
                    error = str(body.get("error") or "")[:500]
                    raise JobFailed(f"job {job_id} ended {status!r}: {error}")
                if "output" not in body:
                    raise JobFailed(f"job {job_id} completed without an output")
                return body["output"]
        except TimeoutError as exc:
            raise JobFailed("no answer before the deadline", timed_out=True) from exc
        except httpx.HTTPError as exc:
            raise JobFailed(f"{type(exc).__name__} talking to the endpoint: {exc}") from exc
        finally:
            if job_id is not None and not finished:
                self._cancel_later(job_id)

    @staticmethod
    def _request(job_input: dict[str, Any], deadline: float) -> dict[str, Any]:
        """The job request. Its `policy.ttl` makes RunPod delete the job, input included, soon
        after the deadline instead of after its default 24 hours (RunPod's minimum is 10 s)."""
        left_ms = (deadline - asyncio.get_running_loop().time()) * 1000
        ttl_ms = max(MIN_TTL_MS, math.ceil(left_ms) + TTL_MARGIN_MS)
        return {"input": job_input, "policy": {"ttl": ttl_ms}}

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            # 401/403: the key; 404: a wrong URL or a job RunPod no longer has; 413/400: the
            # payload; 429: the endpoint's queue is full; 5xx: RunPod or the worker failed.
            raise JobFailed(
                f"{response.request.method} {response.request.url.path} answered "
                f"{response.status_code}: {response.text[:200]!r}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise JobFailed("the endpoint answered something that is not JSON") from exc
        if not isinstance(body, dict):
            raise JobFailed("the endpoint answered JSON that is not an object")
        return body

    def _cancel_later(self, job_id: str) -> None:
        """Cancel in the background: the caller is leaving (deadline or cancellation) now."""
        task = asyncio.get_running_loop().create_task(self._cancel(job_id))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _cancel(self, job_id: str) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                response = await self._client.post(f"/cancel/{job_id}")
            log.info("cancelled job %s: %s", job_id, response.status_code)
        except (TimeoutError, httpx.HTTPError) as exc:
            log.warning("could not cancel job %s: %s", job_id, type(exc).__name__)

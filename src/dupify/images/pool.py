"""Worker processes for the decoder: one pipe each way per worker (dupify.images.frames), read and
written by the event loop that awaits the task, so a decode costs the server no threads and no
lock hand-offs."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from dupify.images.frames import (
    Frame,
    frame_of,
    out_of_band,
    receive_blocking,
    send_blocking,
    widen,
    write,
    write_or_gone,
)

log = logging.getLogger("dupify.images.pool")

# How long a worker that closed its pipe is given to be reaped, for its exit code.
_REAP_S = 1.0
_BOOT_S = 60.0
_JOIN_S = 10.0
# The worker's program: the server's import path, then the serving loop (stdin and stdout are
# the pipes; `_serve_stdio` moves them aside so a stray print cannot corrupt a frame).
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from dupify.images.pool import _serve_stdio; _serve_stdio()"
)


class WorkerDied(Exception):
    """The worker ended with a task in it; `exit_code` is Popen's (minus the signal's number
    for a signal), or None if it could not be read."""

    def __init__(self, exit_code: int | None) -> None:
        super().__init__(f"decoder worker died (exit code {exit_code})")
        self.exit_code = exit_code


class Worker:
    """One worker process and its two pipes. Not shared: one task at a time, from one loop."""

    def __init__(self, initializer: Callable[[], object]) -> None:
        self.process = subprocess.Popen(  # noqa: S603  # this interpreter, our own program
            [sys.executable, "-c", _BOOT, json.dumps(sys.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._to, self._from = self.process.stdin.fileno(), self.process.stdout.fileno()
        for fd in (self._to, self._from):
            widen(fd)
            os.set_blocking(fd, False)
        self.ready = False
        # Calls in flight on an event loop, which has the pipes registered: a kill leaves the
        # pipes open until the last of them has seen the end of the worker's.
        self._calls = 0
        self._killed = False
        # The first frame: what the worker runs once before it says it is ready. Small, so the
        # empty pipe takes it whole.
        if not write(self._to, frame_of(initializer)):
            raise RuntimeError("the decoder worker's pipe refused its first frame")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1
            if self._killed and not self._calls:
                self._close_pipes()

    async def run(self, function: Callable[..., Any], args: tuple[object, ...]) -> tuple[bool, Any]:
        """`function(*args)` in the worker: (True, its value) or (False, what it raised)."""
        with self._call():
            return await self._run(function, args)

    async def _run(
        self, function: Callable[..., Any], args: tuple[object, ...]
    ) -> tuple[bool, Any]:
        task = tuple(out_of_band(arg) for arg in args)
        loop = asyncio.get_running_loop()
        views = frame_of((function, task))
        if not write_or_gone(self._to, views):
            written = loop.create_future()

            def on_writable() -> None:
                if write_or_gone(self._to, views) and not written.done():
                    written.set_result(None)

            loop.add_writer(self._to, on_writable)
            try:
                await written
            finally:
                loop.remove_writer(self._to)
        reply: tuple[bool, Any] = await self.receive()
        return reply

    async def receive(self) -> Any:
        """The next frame from the worker (WorkerDied if it ended first): its ready frame, or
        a task's reply."""
        loop = asyncio.get_running_loop()
        frame, arrived = Frame(), loop.create_future()

        def on_readable() -> None:
            try:
                complete = frame.feed(self._from)
            except (EOFError, OSError) as exc:
                if not arrived.done():
                    arrived.set_exception(exc if isinstance(exc, EOFError) else EOFError())
                return
            if complete and not arrived.done():
                arrived.set_result(None)

        loop.add_reader(self._from, on_readable)
        try:
            await arrived
        except EOFError:
            raise WorkerDied(await self._exit_code()) from None
        finally:
            loop.remove_reader(self._from)
        return frame.value()

    async def wait_ready(self) -> None:
        if not self.ready:
            with self._call():
                await self.receive()
            self.ready = True

    def wait_ready_blocking(self, timeout: float) -> None:
        """Block (any thread; no task may be running on this worker) until the worker is up."""
        deadline = time.monotonic() + timeout
        frame = Frame()
        while not self.ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("a decoder worker did not start")
            select.select([self._from], [], [], remaining)
            try:
                self.ready = frame.feed(self._from)
            except EOFError:
                raise WorkerDied(self.process.poll()) from None

    async def _exit_code(self) -> int | None:
        try:  # the pipe closes as the process ends: it is reaped a moment later
            return await asyncio.to_thread(self.process.wait, _REAP_S)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Stop the process now (a task in it is abandoned) and let go of its pipes: at once,
        or, with a call in flight, once that call has seen them end (closing a pipe that a
        loop still watches would leave the call waiting for ever)."""
        if self.process.poll() is None:
            self.process.kill()
        self._killed = True
        if not self._calls:
            self._close_pipes()
        try:
            self.process.wait(_JOIN_S)
        except subprocess.TimeoutExpired:
            log.error("decoder worker %d did not stop", self.pid)

    def _close_pipes(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class WorkerPool:
    """`size` worker processes, each running one task at a time; a worker that dies, times out
    or is abandoned mid-task is killed and replaced, so every worker handed out is fresh or was
    left between tasks. The caller keeps at most `size` tasks running (the decoder's fair queue
    does), so a task always finds a worker free."""

    def __init__(self, size: int, initializer: Callable[[], object]) -> None:
        self._initializer = initializer
        self._idle: collections.deque[Worker] = collections.deque()
        self._busy: set[Worker] = set()
        self._closed = False
        for _ in range(size):
            self._idle.append(Worker(initializer))

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in (*self._idle, *self._busy)]

    async def run(self, function: Callable[..., Any], *args: object, budget_s: float) -> Any:
        """`function(*args)` in a free worker, within `budget_s` seconds of its start
        (TimeoutError after); WorkerDied if the worker ends with it; what the function raised,
        raised here."""
        worker = self._take()
        try:
            try:  # the budget starts once the worker is up (a replacement takes a moment)
                async with asyncio.timeout(_BOOT_S):
                    await worker.wait_ready()
            except TimeoutError:
                raise WorkerDied(None) from None
            async with asyncio.timeout(budget_s):
                succeeded, value = await worker.run(function, args)
        except BaseException:
            # Dead, out of time, or abandoned by its caller with a frame half sent or a reply
            # unread: nothing else may use this worker.
            self._replace(worker)
            raise
        self._busy.discard(worker)
        self._idle.append(worker)
        if not succeeded:
            raise value
        return value

    def _take(self) -> Worker:
        if self._closed:
            raise RuntimeError("the decoder's workers are closed")
        if not self._idle:
            raise RuntimeError("every decoder worker is busy: the caller ran too many tasks")
        worker = self._idle.popleft()
        self._busy.add(worker)
        if not worker.alive():
            # Killed between tasks (the OOM killer may pick an idle worker, say).
            log.error(
                "decoder worker %d died while idle (exit code %s); starting a new one",
                worker.pid,
                worker.process.returncode,
            )
            worker = self._replace(worker, idle=False)
        return worker

    def _replace(self, worker: Worker, idle: bool = True) -> Worker:
        """Kill `worker` and start another in its place (idle, or busy for the caller). Runs on
        the event loop: a SIGKILL and a spawn cost it about a millisecond, and only after a
        death or a timeout."""
        self._busy.discard(worker)
        worker.kill()
        if self._closed:
            return worker
        fresh = Worker(self._initializer)
        if idle:
            self._idle.append(fresh)
        else:
            self._busy.add(fresh)
        return fresh

    def warm_up(self, timeout: float) -> None:
        """Block until every idle worker has started (call before the pool serves)."""
        for worker in list(self._idle):
            worker.wait_ready_blocking(timeout)

    def close(self) -> None:
        """Kill every worker, busy or not; none is started after."""
        self._closed = True
        for worker in (*self._idle, *self._busy):
            worker.kill()
        self._idle.clear()
        self._busy.clear()


def _serve_stdio() -> None:
    """The worker's main: serve tasks on the pipes that arrived as stdin and stdout."""
    channel_in, channel_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    # A Ctrl-C at the terminal reaches the whole process group: the server stops gracefully on
    # it, and its requests in flight still need their workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(channel_in, channel_out)


def _serve(channel_in: int, channel_out: int) -> None:
    initializer = receive_blocking(channel_in).value()
    initializer()
    send_blocking(channel_out, frame_of(os.getpid()))
    while True:
        try:
            frame = receive_blocking(channel_in)
        except EOFError:
            return  # the server closed the pipe: it is gone or closing
        try:
            function, args = frame.value(immutable=True)
            reply: tuple[bool, object] = (True, function(*args))
        except Exception as exc:  # the function's own error, or a task that does not unpickle
            reply = (False, exc)
        try:
            views = frame_of(reply)
        except Exception as exc:  # a value or an exception that does not pickle
            views = frame_of((False, RuntimeError(f"unpicklable task result: {exc!r}")))
        try:
            send_blocking(channel_out, views)
        except BrokenPipeError:
            return  # the server went while this task ran

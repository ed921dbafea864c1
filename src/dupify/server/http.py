"""The HTTP/1.1 protocol `dupify serve` runs: uvicorn's httptools one with bounded request heads
(bytes, header count, a deadline) and bodies (a minimum rate), refusing in the error envelope."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from dupify.config import ServerSettings, Settings
from dupify.db import new_id
from dupify.errors import ApiError

log = logging.getLogger("dupify.server.http")
# After a refusal the connection stays open this long, reading and dropping what the client still
# sends: closed with unread bytes, TCP would reset it and the client could lose the answer.
LINGER_S = 2.0


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; uvicorn then calls `send_400_response`."""


@functools.cache
def server_limits() -> ServerSettings:
    """The limits, read once per process from DUPIFY_* and `.env` as the app factory reads its
    settings: uvicorn makes the protocol itself, in every worker process."""
    return Settings().server


class GuardedHttpProtocol(HttpToolsProtocol):
    """One connection. A head (request line and headers) must stay within `max_header_bytes`
    and `max_headers` and be complete `header_timeout_s` after the connection opened (the first
    request) or after its first byte (later ones). A body must progress by `body_min_rate` bytes
    per second in every `body_timeout_s` window while the app is reading it. Over a limit the
    client gets the error envelope (431, 408, or 400 for malformed HTTP) and the connection
    closes; a refused head never reaches the app."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = server_limits()
        # Between requests and while a head is read; its bytes are counted before parsing, since
        # httptools buffers a header whole before handing it over.
        self._head_open = True
        self._head_begun = False
        self._head_bytes = 0
        self._header_count = 0
        self._body_bytes = 0  # in the current body window
        # The one pending deadline: the head's, the body window's, or the linger after a refusal.
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: ApiError | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: read and drop
        if self._head_open:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            not self._refused
            and self._head_open
            and self._head_bytes > self.limits.max_header_bytes
        ):
            self._refuse(self._too_large())

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to anything its parser rejects, ours included (see `_Refused`).
        self._refuse(self._refusal or ApiError("invalid_request", "Malformed HTTP request."))

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        self._header_count = 0
        if self._deadline is None:
            self._arm(self.limits.header_timeout_s, self._head_too_slow)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = self._too_large(f"more than {self.limits.max_headers} header fields")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        # Exact where the byte count is not: a head that ended inside one read.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refusal = self._too_large()
            raise _Refused
        self._head_open = self._head_begun = False
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        super().on_headers_complete()
        if not upgrading:
            self._body_bytes = 0
            self._arm(self.limits.body_timeout_s, self._check_body_progress)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._head_open = True
        self._head_bytes = 0

    # Deadlines
    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if not self._head_begun:
            # Connected and silent: nothing to answer (a browser's spare connection, say).
            self.transport.close()
            return
        timeout = self.limits.header_timeout_s
        self._refuse(ApiError("request_timeout", f"Request headers not received in {timeout:g} s."))

    def _check_body_progress(self) -> None:
        self._deadline = None
        window = self.limits.body_timeout_s
        # Paused reads or a pending `100 Continue` wait on the app, not on the client.
        waiting_on_app = self.flow.read_paused or self.cycle.waiting_for_100_continue
        if not waiting_on_app and self._body_bytes < max(1, self.limits.body_min_rate * window):
            rate = self.limits.body_min_rate
            message = f"Request body slower than {rate} bytes per second over {window:g} s."
            self._refuse(ApiError("request_timeout", message))
            return
        self._body_bytes = 0
        self._arm(window, self._check_body_progress)

    # Refusing
    def _too_large(self, what: str = "") -> ApiError:
        what = what or f"over {self.limits.max_header_bytes} bytes"
        return ApiError("request_header_fields_too_large", f"Request headers {what}.")

    def _refuse(self, error: ApiError) -> None:
        """Answer `error` and close; only close when a response to this request, or to an earlier
        pipelined one still in the app, has begun or is due first."""
        self._refused = True
        self._disarm()
        request_id = new_id("req")
        log.info("refused before the app: %s request_id=%s", error.code, request_id)
        cycle: RequestResponseCycle | None = self.cycle
        if self._head_open:  # the cycle, if any, is an earlier request's
            can_answer = cycle is None or cycle.response_complete
        else:
            can_answer = cycle is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # The app now reads a disconnect and whatever it answers is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        if not can_answer:
            self.transport.close()
            return
        self.transport.write(self._response(error, request_id))
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)

    def _response(self, error: ApiError, request_id: str) -> bytes:
        body = json.dumps(error.body(request_id)).encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
        ]
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        return STATUS_LINE[error.status] + lines + b"\r\n" + body

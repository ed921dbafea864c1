"""A real SMTP server for tests (aiosmtpd in a thread) that keeps what it receives."""

from __future__ import annotations

import asyncio
import email
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: Message

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode(self.message.get_content_charset() or "utf-8")


@dataclass
class SmtpSink:
    """Collects every message; `login` (user, password) makes it accept AUTH (checked)."""

    port: int
    login: tuple[str, str] | None = None
    refuse: frozenset[str] = frozenset()  # recipients answered "550 no such mailbox"
    data_delay_s: float = 0.0  # a slow server: each message's DATA is answered this much later
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay_s:
            await asyncio.sleep(self.data_delay_s)
        parsed = email.message_from_bytes(envelope.content)
        with self._lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and self.login is not None:
            user, password = data.login.decode(), data.password.decode()
            if (user, password) == self.login:
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if address in item.recipients]

    @property
    def url(self) -> str:
        if self.login is None:
            return f"smtp://127.0.0.1:{self.port}"
        user, password = (part.replace("@", "%40").replace(":", "%3A") for part in self.login)
        return f"smtp://{user}:{password}@127.0.0.1:{self.port}"


@contextmanager
def running_sink(sink: SmtpSink) -> Iterator[SmtpSink]:
    options: dict[str, Any] = {}
    if sink.login is not None:
        # Plain-text AUTH on loopback only: the sink has no certificate to offer STARTTLS with.
        options = {
            "authenticator": sink.authenticate,
            "auth_required": False,
            "auth_require_tls": False,
        }
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port, **options)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()

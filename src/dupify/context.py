"""The typed facts of one request: who is calling, and what the request used.

Authentication (or the portal, for its playground) fills in the caller; metering, the result
cache and the routes add what the request used; the request middleware writes the usage-log
row and the extra response headers from it. It is passed explicitly below the HTTP layer, so
nothing there needs the framework's request object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Reservation:
    """Images of the monthly quota held for this request, and the instant that names the month."""

    images: int
    at: datetime


@dataclass
class RequestContext:
    """One request's caller and usage. `account_id` is None until the caller is known."""

    request_id: str
    account_id: str | None = None
    key_id: str | None = None  # None for the portal's own requests (the playground)
    plan: str = "free"
    scopes: frozenset[str] = frozenset()
    # Names throttle counters only (PRIVACY.md row 2): never stored or logged.
    client_address: str | None = None
    # What the request used, as recorded in its usage-log row.
    images: int = 0
    cached_images: int = 0
    bytes_in: int = 0
    # The model(s) that answered, as the route chose them (`+`-joined when several did).
    model: str | None = None
    error_code: str | None = None
    # Headers for whatever response follows, errors included (e.g. the rate-limit headers).
    response_headers: dict[str, str] = field(default_factory=dict)
    reservation: Reservation | None = None
    # Run once the request has ended, whatever its outcome (e.g. give back its body's room).
    finishers: list[Callable[[], None]] = field(default_factory=list)

    def identify(
        self,
        *,
        account_id: str,
        key_id: str | None,
        plan: str,
        scopes: frozenset[str] = frozenset(),
    ) -> None:
        """Record who is calling, once authentication (or a portal session) has said so."""
        self.account_id = account_id
        self.key_id = key_id
        self.plan = plan
        self.scopes = scopes

    @property
    def caller(self) -> str:
        """The account id, for code that runs only after authentication."""
        if self.account_id is None:
            raise RuntimeError("the request's caller is not known yet (authenticate first)")
        return self.account_id

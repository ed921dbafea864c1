"""Throttles on password guessing: sign-in and reset requests, per email+address and per address.

Counted with the shared limiter (Redis when configured, so every worker sees the same counts).
A successful sign-in clears its email+address counter; failures within the window lock that
pair out until the window ends, and a per-address ceiling stops one client spraying many emails.
"""

from __future__ import annotations

from dupify.runtime import Runtime

RESETS_PER_WINDOW = 5


def _window_s(runtime: Runtime) -> int:
    return max(1, int(runtime.settings.portal.login_window.total_seconds()))


async def login_allowed(runtime: Runtime, email: str, address: str) -> bool:
    portal = runtime.settings.portal
    window = _window_s(runtime)
    pair = await runtime.limiter.hit("login", f"{email}|{address}", portal.login_attempts, window)
    wide = await runtime.limiter.hit(
        "login-address", address, portal.login_attempts_per_address, window
    )
    return pair.allowed and wide.allowed


async def login_succeeded(runtime: Runtime, email: str, address: str) -> None:
    await runtime.limiter.forget("login", f"{email}|{address}")


async def reset_allowed(runtime: Runtime, email: str, address: str) -> bool:
    portal = runtime.settings.portal
    window = _window_s(runtime)
    pair = await runtime.limiter.hit("reset", f"{email}|{address}", RESETS_PER_WINDOW, window)
    wide = await runtime.limiter.hit(
        "reset-address", address, portal.login_attempts_per_address, window
    )
    return pair.allowed and wide.allowed

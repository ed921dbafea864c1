"""Throttles on the portal's costly or guessable forms: sign-in, reset, sign-up, password checks.

Counted with the shared limiter (Redis when configured, so every worker sees the same counts).
A successful sign-in (or account-page password check) clears its counter; failures within the
window lock it out until the window ends, and a per-address ceiling stops one client spraying
many emails or accounts.
"""

from __future__ import annotations

from dupify.server.runtime import Runtime

# Reset and sign-up requests per email address per window: each one costs an email or a hash.
EMAIL_REQUESTS_PER_WINDOW = 5


def _window_s(runtime: Runtime) -> int:
    return max(1, int(runtime.settings.portal.login_window.total_seconds()))


async def _allowed(runtime: Runtime, bucket: str, identity: str, limit: int, address: str) -> bool:
    """Count one attempt against `identity` in `bucket` and against the client address's
    ceiling for that bucket; allowed only while both are within their limits."""
    window = _window_s(runtime)
    ceiling = runtime.settings.portal.login_attempts_per_address
    own = await runtime.limiter.hit(bucket, identity, limit, window)
    wide = await runtime.limiter.hit(f"{bucket}-address", address, ceiling, window)
    return own.allowed and wide.allowed


async def login_allowed(runtime: Runtime, email: str, address: str) -> bool:
    limit = runtime.settings.portal.login_attempts
    return await _allowed(runtime, "login", f"{email}|{address}", limit, address)


async def login_succeeded(runtime: Runtime, email: str, address: str) -> None:
    await runtime.limiter.forget("login", f"{email}|{address}")


async def reset_allowed(runtime: Runtime, email: str, address: str) -> bool:
    limit = EMAIL_REQUESTS_PER_WINDOW
    return await _allowed(runtime, "reset", f"{email}|{address}", limit, address)


async def signup_allowed(runtime: Runtime, email: str, address: str) -> bool:
    """Per target email (from any client: each try costs a hash) and per client address."""
    return await _allowed(runtime, "signup", email, EMAIL_REQUESTS_PER_WINDOW, address)


async def signup_notice_due(runtime: Runtime, email: str) -> bool:
    """Whether a sign-up with `email` may mail its holder: once per email per window, so
    repeated sign-ups with someone's address cannot flood their inbox."""
    notice = await runtime.limiter.hit("signup-notice", email, 1, _window_s(runtime))
    return notice.allowed


async def password_check_allowed(runtime: Runtime, account_id: str, address: str) -> bool:
    """The account page's current-password checks (new email, new password, deletion), counted
    per account, so a stolen session cannot guess the password without limit."""
    limit = runtime.settings.portal.login_attempts
    return await _allowed(runtime, "account-password", account_id, limit, address)


async def password_check_succeeded(runtime: Runtime, account_id: str) -> None:
    await runtime.limiter.forget("account-password", account_id)

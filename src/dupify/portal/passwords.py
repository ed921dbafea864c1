"""Portal passwords: Argon2id hashes at or above OWASP's parameters, checked in worker threads."""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP's Password Storage Cheat Sheet minimum for Argon2id is m=19 MiB, t=2, p=1; the time cost
# here is one pass above it. Verification reads the parameters from each stored hash, and
# `needs_rehash` upgrades older hashes at the next sign-in if these are ever raised.
HASHER = PasswordHasher(time_cost=3, memory_cost=19456, parallelism=1, hash_len=32, type=Type.ID)
MIN_LENGTH = 10
MAX_LENGTH = 256
# Verified against when the email is unknown, so a missing account costs the same time as a wrong
# password (no account oracle through timing).
_DUMMY_HASH = HASHER.hash("dupify-no-such-account-placeholder")


class PasswordRuleError(ValueError):
    """A new password that does not meet the rules (message is safe to show)."""


def check_new_password(password: str, *, email: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordRuleError(f"The password must be at least {MIN_LENGTH} characters long.")
    if len(password) > MAX_LENGTH:
        raise PasswordRuleError(f"The password must be at most {MAX_LENGTH} characters long.")
    if password.strip().lower() == email.strip().lower():
        raise PasswordRuleError("The password must not be your email address.")


def hash_password(password: str) -> str:
    """Slow on purpose (~tens of ms): call it from a worker thread, never on the event loop."""
    return HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches; an account without a password never matches (same cost)."""
    try:
        return HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return HASHER.check_needs_rehash(stored_hash)

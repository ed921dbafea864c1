"""One-line confirmations shown after a redirect, chosen by a code in the URL (never user text)."""

from __future__ import annotations

NOTICES: dict[str, str] = {
    "signed_up": "Check your inbox: we sent a link to confirm your email address.",
    "verified": "Your email address is confirmed. Sign in to continue.",
    "email_changed": "Your new email address is confirmed and now in use.",
    "signed_out": "You are signed out.",
    "reset_sent": "If an account uses that address, a link to reset its password is on its way.",
    "password_reset": "Your password was changed and every session ended. Sign in again.",
    "password_changed": "Your password was changed; every other session was signed out.",
    "verification_sent": "We sent a new confirmation link to your email address.",
    "email_change_sent": "We sent a link to the new address; it replaces the old one once opened.",
    "profile_saved": "Your name was saved.",
    "preferences_saved": "Your preferences were saved.",
    "key_revoked": "The key was revoked; it is refused from the next request on.",
    "account_deleted": "Your account and everything stored about it were deleted.",
    "policy_acknowledged": "Thank you: the policy update is acknowledged.",
    "admin_done": "Done.",
}

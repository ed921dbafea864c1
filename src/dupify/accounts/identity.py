"""Supabase Auth as an optional identity provider: its token endpoint (email and password, and
the PKCE code exchange of its OAuth providers), access-token verification, and the link to a
Dupify account by verified email.

A token is accepted only if PyJWT verifies its signature — HS256 with the project's JWT secret,
or RS256/ES256 with a key from the project's JWKS (fetched, cached, and fetched again for a key
id it has not seen, so key rotation needs no restart) — and its `aud`, `iss` and `exp`. The
algorithm list is fixed per key type, so `none` and an HS256 token signed with a public key
(algorithm confusion) are refused. The calls to Supabase block: callers run them in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from sqlalchemy import delete
from sqlalchemy.orm import Session

from dupify.accounts.models import Account, WebSession
from dupify.accounts.service import AccountError, find_by_email, normalise_email
from dupify.config import SupabaseSettings

ASYMMETRIC = ["RS256", "ES256"]
SYMMETRIC = ["HS256"]
_MAX_ANSWER = 64 * 1024


class IdentityError(Exception):
    """A sign-in through Supabase that did not work (message is safe to show)."""


@dataclass(frozen=True)
class VerifiedIdentity:
    subject: str
    email: str
    email_verified: bool
    name: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Supabase Auth's token and key endpoints answer directly; a redirect is not followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def pkce_pair(verifier: str) -> str:
    """The S256 code challenge of a PKCE code verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class SupabaseAuth:
    """One Supabase project: its token endpoint, its keys, and what its tokens must say."""

    def __init__(self, settings: SupabaseSettings) -> None:
        if not settings.enabled or settings.url is None or settings.anon_key is None:
            raise ValueError("Supabase sign-in needs DUPIFY_SUPABASE__URL and __ANON_KEY")
        if urllib.parse.urlsplit(settings.url).scheme not in ("https", "http"):
            raise ValueError("DUPIFY_SUPABASE__URL must be an https:// address")
        self.settings = settings
        self.base = settings.url.rstrip("/") + "/auth/v1"
        self.issuer = self.base
        self._anon_key = settings.anon_key.get_secret_value()
        self._jwks = jwt.PyJWKClient(
            self.base + "/.well-known/jwks.json",
            cache_keys=True,
            lifespan=settings.jwks_cache_s,
            timeout=int(settings.timeout_s),
            headers={"apikey": self._anon_key},
            # A token with an unknown key id refetches the keys (rotation), but not on every
            # such token: a flood of made-up key ids must not turn into a flood of fetches.
            cooldown_duration=settings.jwks_refresh_cooldown_s,
        )

    # -- the token endpoint -----------------------------------------------------------------

    def _token(self, grant_type: str, body: dict[str, str], refused: str) -> str:
        url = f"{self.base}/token?{urllib.parse.urlencode({'grant_type': grant_type})}"
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"apikey": self._anon_key, "Content-Type": "application/json"},
        )
        try:
            with _opener.open(request, timeout=self.settings.timeout_s) as response:
                answer = json.loads(response.read(_MAX_ANSWER))
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                raise IdentityError(refused) from exc
            raise IdentityError("Supabase sign-in is not available; try again later.") from exc
        except (OSError, ValueError) as exc:
            raise IdentityError("Supabase sign-in is not available; try again later.") from exc
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise IdentityError("Supabase sign-in answered without an access token.")
        return token

    def password_grant(self, email: str, password: str) -> str:
        """An access token for an email and password (Supabase Auth's password grant)."""
        refused = "The email address or the password is not right."
        return self._token("password", {"email": email, "password": password}, refused)

    def pkce_exchange(self, code: str, verifier: str) -> str:
        """An access token for the code an OAuth sign-in came back with (PKCE grant)."""
        refused = "The sign-in could not be completed in this browser; start it again."
        return self._token("pkce", {"auth_code": code, "code_verifier": verifier}, refused)

    def authorize_url(self, provider: str, redirect_to: str, verifier: str) -> str:
        """Where to send the browser to sign in with `provider` (PKCE, S256)."""
        query = {
            "provider": provider,
            "redirect_to": redirect_to,
            "code_challenge": pkce_pair(verifier),
            "code_challenge_method": "s256",
        }
        return f"{self.base}/authorize?{urllib.parse.urlencode(query)}"

    # -- verification -------------------------------------------------------------------------

    def verify(self, token: str) -> VerifiedIdentity:
        """The identity an access token proves; IdentityError for any token that does not hold."""
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm in SYMMETRIC and self.settings.jwt_secret is not None:
                key: Any = self.settings.jwt_secret.get_secret_value()
                algorithms = SYMMETRIC
            elif algorithm in ASYMMETRIC:
                key = self._jwks.get_signing_key_from_jwt(token).key
                algorithms = ASYMMETRIC
            else:
                raise IdentityError("The sign-in token uses an algorithm that is not accepted.")
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.settings.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=5,
            )
        except jwt.PyJWKClientError as exc:
            raise IdentityError("The sign-in token is signed with a key we do not know.") from exc
        except jwt.PyJWTError as exc:
            raise IdentityError(f"The sign-in token was refused ({type(exc).__name__}).") from exc
        return _identity_of(claims)


def _identity_of(claims: dict[str, Any]) -> VerifiedIdentity:
    metadata = claims.get("user_metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    email = claims.get("email")
    if not isinstance(email, str) or not email:
        raise IdentityError("The Supabase account has no email address.")
    # Supabase marks a confirmed address (sign-up link, or a provider that vouches for it) in
    # user_metadata.email_verified; a top-level claim is honoured too.
    verified = metadata.get("email_verified") is True or claims.get("email_verified") is True
    name = metadata.get("full_name") or metadata.get("name") or email.split("@", 1)[0]
    return VerifiedIdentity(
        subject=str(claims["sub"]), email=email, email_verified=verified, name=str(name)[:200]
    )


def linked_account(db: Session, identity: VerifiedIdentity, now: datetime) -> Account | None:
    """The Dupify account with the identity's verified email, or None (a sign-up comes next).

    An account that never confirmed its address in Dupify may have been made by someone else
    with this address: the Supabase sign-in proves the mailbox, so the address is confirmed now,
    and the unproven password and the sessions are dropped (no pre-hijacked account).
    """
    if not identity.email_verified:
        raise IdentityError(
            "Your Supabase account's email address is not confirmed. Confirm it first."
        )
    try:
        email = normalise_email(identity.email)
    except AccountError as exc:
        raise IdentityError("The Supabase account's email address is not valid.") from exc
    account = find_by_email(db, email)
    if account is not None and account.email_verified_at is None:
        account.password_hash = None
        account.email_verified_at = now
        db.execute(delete(WebSession).where(WebSession.account_id == account.id))
    return account

"""Test helper: a stand-in for Supabase Auth (which cannot run here) that speaks its protocol over
a real socket on 127.0.0.1: the JWKS document, the token endpoint's password and PKCE grants,
and /authorize (which signs in at once and redirects back with a code). Tokens are minted with
test keys; the S256 code challenge is checked as the real server does."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ANON_KEY = "test-anon-key"
JWT_SECRET = "test-jwt-secret-" + "s" * 32


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(repr=False)

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}


def new_key(kid: str) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))


@dataclass
class FakeSupabase:
    """State of the fake project: published keys, users and pending OAuth codes."""

    base_url: str = ""
    published: list[SigningKey] = field(default_factory=list)
    signer: SigningKey | None = None
    users: dict[str, str] = field(default_factory=dict)  # email -> password
    # email -> a function making that user's access token (default: a good one)
    tokens: dict[str, Callable[[str], str]] = field(default_factory=dict)
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (challenge, email)
    oauth_email: str = "oauth-person@example.com"
    jwks_fetches: int = 0

    @property
    def issuer(self) -> str:
        return self.base_url + "/auth/v1"

    def claims(self, email: str, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "authenticated",
            "sub": hashlib.sha256(email.encode()).hexdigest()[:32],
            "email": email,
            "role": "authenticated",
            "iat": now,
            "exp": now + 3600,
            "user_metadata": {"email_verified": True, "full_name": "Supa Person"},
        }
        claims.update(changes)
        return claims

    def mint(self, email: str, *, key: SigningKey | None = None, **changes: Any) -> str:
        chosen = key or self.signer
        assert chosen is not None
        return jwt.encode(
            self.claims(email, **changes), chosen.private, "RS256", headers={"kid": chosen.kid}
        )

    def token_for(self, email: str) -> str:
        make = self.tokens.get(email)
        return make(email) if make else self.mint(email)


def _handler(state: FakeSupabase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/auth/v1/.well-known/jwks.json":
                state.jwks_fetches += 1
                self._answer(200, {"keys": [key.public_jwk() for key in state.published]})
            elif url.path == "/auth/v1/authorize":
                query = {name: values[0] for name, values in parse_qs(url.query).items()}
                if query.get("code_challenge_method") != "s256" or not query.get("code_challenge"):
                    self._answer(400, {"error": "pkce required"})
                    return
                code = secrets.token_urlsafe(16)
                state.codes[code] = (query["code_challenge"], state.oauth_email)
                target = query["redirect_to"]
                joiner = "&" if "?" in target else "?"
                self.send_response(302)
                self.send_header("Location", target + joiner + urlencode({"code": code}))
                self.end_headers()
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            body = json.loads(
                self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}"
            )
            grant = parse_qs(url.query).get("grant_type", [""])[0]
            if url.path != "/auth/v1/token" or self.headers.get("apikey") != ANON_KEY:
                self._answer(401, {"error": "invalid apikey"})
            elif grant == "password":
                email = body.get("email", "")
                if state.users.get(email) != body.get("password"):
                    self._answer(400, {"error": "invalid_grant"})
                    return
                self._answer(200, {"access_token": state.token_for(email), "token_type": "bearer"})
            elif grant == "pkce":
                found = state.codes.pop(body.get("auth_code", ""), None)
                verifier = body.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                if found is None or challenge.rstrip(b"=").decode() != found[0]:
                    self._answer(
                        400, {"error": "invalid_grant", "error_description": "bad verifier"}
                    )
                    return
                self._answer(
                    200, {"access_token": state.token_for(found[1]), "token_type": "bearer"}
                )
            else:
                self._answer(400, {"error": "unsupported_grant_type"})

    return Handler


@contextmanager
def running_fake_supabase() -> Iterator[FakeSupabase]:
    state = FakeSupabase()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    state.signer = new_key("key-1")
    state.published = [state.signer]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()

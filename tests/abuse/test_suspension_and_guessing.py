"""Abuse controls on the API (PRIVACY row 8): suspension refuses the very next request, and a
client that keeps guessing keys is throttled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from dupify.abuse.service import set_account_suspended, set_key_suspended
from dupify.accounts.service import require_by_email
from dupify.config import AbuseSettings
from dupify.db import session_factory, transaction
from dupify.keys.models import ApiKey
from dupify.keys.service import KeyRequestError
from support.api import Api


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def key_id_of(running: Api, account_email: str) -> tuple[str, str]:
    with session_factory(running.engine)() as session:
        account = require_by_email(session, account_email)
        key = session.scalars(select(ApiKey).where(ApiKey.account_id == account.id)).one()
        return account.id, key.id


async def test_a_suspended_key_or_account_is_refused_on_the_next_request(api: Api) -> None:
    key = api.new_key(email="abuser@example.com")
    other = api.new_key(email="bystander@example.com")
    account_id, key_id = key_id_of(api, "abuser@example.com")
    sessions = session_factory(api.engine)
    assert (await api.client.get("/v1/models", headers=auth(key))).status_code == 200

    with transaction(sessions) as session:
        set_key_suspended(session, key_id, True)
    refused = await api.client.get("/v1/models", headers=auth(key))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "account_suspended"
    assert (await api.client.get("/v1/models", headers=auth(other))).status_code == 200

    with transaction(sessions) as session:
        set_key_suspended(session, key_id, False)
    assert (await api.client.get("/v1/models", headers=auth(key))).status_code == 200

    with transaction(sessions) as session:
        set_account_suspended(session, account_id, True)
    refused = await api.client.get("/v1/models", headers=auth(key))
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "account_suspended")
    assert (await api.client.get("/v1/models", headers=auth(other))).status_code == 200

    with transaction(sessions) as session:
        set_account_suspended(session, account_id, False)
    assert (await api.client.get("/v1/models", headers=auth(key))).status_code == 200


async def test_suspending_an_unknown_key_is_a_clear_error(api: Api) -> None:
    with transaction(session_factory(api.engine)) as session:
        try:
            set_key_suspended(session, "key_missing", True)
        except KeyRequestError as exc:
            assert "no key" in str(exc)
        else:
            raise AssertionError("an unknown key was suspended")


async def test_guessing_keys_from_one_address_gets_429_and_other_clients_are_unaffected(
    api_factory: Callable[..., Any],
) -> None:
    abuse = AbuseSettings(bad_key_attempts=5)
    async with api_factory(abuse=abuse) as running:
        real_key = running.new_key()
        guess = real_key[:-6] + ("A" if real_key[-6] != "A" else "B") + real_key[-5:]
        for _ in range(5):
            response = await running.client.get("/v1/models", headers=auth(guess))
            assert response.json()["error"]["code"] == "invalid_api_key"
        throttled = await running.client.get("/v1/models", headers=auth(guess))
        assert throttled.status_code == 429
        assert throttled.json()["error"]["code"] == "rate_limited"
        assert int(throttled.headers["Retry-After"]) > 0
        # While throttled, even the real key is refused: 429 vs 200 would reveal a right guess.
        assert (await running.client.get("/v1/models", headers=auth(real_key))).status_code == 429

        async with running.new_client(client=("198.51.100.7", 4242)) as elsewhere:
            assert (await elsewhere.get("/v1/models", headers=auth(real_key))).status_code == 200


async def test_valid_keys_and_missing_keys_do_not_count_as_guesses(
    api_factory: Callable[..., Any],
) -> None:
    async with api_factory(abuse=AbuseSettings(bad_key_attempts=3)) as running:
        key = running.new_key()
        for _ in range(6):
            assert (await running.client.get("/v1/models", headers=auth(key))).status_code == 200
            missing = await running.client.get("/v1/models")
            assert missing.json()["error"]["code"] == "missing_api_key"
        assert (await running.client.get("/v1/models", headers=auth(key))).status_code == 200


async def test_behind_a_trusted_proxy_each_forwarded_client_is_counted_alone(
    api_factory: Callable[..., Any],
) -> None:
    # Every request comes from the proxy's address; only X-Forwarded-For tells clients apart.
    # Without it, one client guessing keys would lock every client out.
    async with api_factory(
        abuse=AbuseSettings(bad_key_attempts=3), portal={"trust_forwarded_proto": True}
    ) as running:
        real_key = running.new_key()
        guess = real_key[:-6] + ("A" if real_key[-6] != "A" else "B") + real_key[-5:]
        guesser = {"X-Forwarded-For": "203.0.113.9", **auth(guess)}
        for _ in range(3):
            await running.client.get("/v1/models", headers=guesser)
        assert (await running.client.get("/v1/models", headers=guesser)).status_code == 429
        # A client's own claim in front of the proxy's entry changes nothing: the last entry
        # (appended by the proxy) is the address.
        spoofed = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", **auth(real_key)}
        assert (await running.client.get("/v1/models", headers=spoofed)).status_code == 429
        other = {"X-Forwarded-For": "198.51.100.20", **auth(real_key)}
        assert (await running.client.get("/v1/models", headers=other)).status_code == 200

"""API keys: format, checksum, hashing at rest, scopes, expiry and revocation."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from dupify.config import UsageLogSettings
from dupify.db import session_factory, transaction
from dupify.keys.format import (
    BASE62,
    KEY_PATTERN,
    checksum,
    display_prefix,
    generate_key,
    is_well_formed,
)
from dupify.keys.models import ApiKey
from dupify.keys.service import KeyRequestError, parse_scopes, revoke_key
from support.api import Api
from support.samples import photo_jpeg


def test_format_and_checksum() -> None:
    key = generate_key()
    assert KEY_PATTERN.match(key)
    assert len(key) == 4 + 32 + 6
    body = key[:-6]
    value = 0
    for char in key[-6:]:
        value = value * 62 + BASE62.index(char)
    assert value == zlib.crc32(body.encode())
    assert is_well_formed(key)
    assert checksum(body) == key[-6:]


def test_every_single_character_typo_is_caught_offline() -> None:
    key = generate_key()
    for position in range(4, len(key)):
        replacement = "a" if key[position] != "a" else "b"
        typo = key[:position] + replacement + key[position + 1 :]
        assert not is_well_formed(typo), position
    assert not is_well_formed(key[:-1])
    assert not is_well_formed("sk-" + key[3:])


def test_keys_are_random() -> None:
    keys = {generate_key() for _ in range(1000)}
    assert len(keys) == 1000


def test_scopes() -> None:
    assert parse_scopes(None) == ["embeddings", "analyze", "usage:read"]
    assert parse_scopes("usage:read,embeddings") == ["embeddings", "usage:read"]
    with pytest.raises(KeyRequestError):
        parse_scopes("admin")
    with pytest.raises(KeyRequestError):
        parse_scopes("")


async def test_database_holds_only_hashes_and_prefixes(api: Api) -> None:
    keys = [api.new_key() for _ in range(3)]
    with api.engine.connect() as connection:
        dump = "\n".join(
            repr(tuple(row))
            for table in ("accounts", "api_keys")
            for row in connection.execute(text(f"SELECT * FROM {table}"))
        )
        rows = connection.execute(text("SELECT display_prefix, key_hash FROM api_keys")).all()
    for key in keys:
        assert key not in dump
        assert key[4:] not in dump
        assert key[4:20] not in dump  # not even a long fragment of the secret part
    assert {row[0] for row in rows} == {display_prefix(key) for key in keys}
    assert all(len(row[1]) == 64 for row in rows)


async def test_revocation_applies_to_the_next_request(api: Api) -> None:
    key = api.new_key()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
    jpeg = photo_jpeg("coffee", size=(64, 64))
    assert (
        await api.client.post("/v1/embeddings", content=jpeg, headers=headers)
    ).status_code == 200
    with transaction(session_factory(api.engine)) as session:
        record = session.query(ApiKey).one()
        revoke_key(session, record.id)
    refused = await api.client.post("/v1/embeddings", content=jpeg, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


async def test_suspended_account_gets_403(api: Api) -> None:
    key = api.new_key()
    with api.engine.begin() as connection:
        connection.execute(text("UPDATE accounts SET suspended_at = CURRENT_TIMESTAMP"))
    response = await api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_suspended"


async def test_last_used_is_recorded_without_a_write_per_request(
    api_factory: Callable[..., Any],
) -> None:
    async with api_factory(usage_log=UsageLogSettings(flush_interval_s=600)) as api:
        key = api.new_key()
        for _ in range(3):
            await api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        with api.engine.connect() as connection:
            before = connection.execute(text("SELECT last_used_at FROM api_keys")).scalar_one()
        assert before is None  # still buffered: requests did not write
        await api.flush_usage()
        with api.engine.connect() as connection:
            after = connection.execute(text("SELECT last_used_at FROM api_keys")).scalar_one()
        assert after is not None

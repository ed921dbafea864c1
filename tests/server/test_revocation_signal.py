"""The key cache keeps the promise across processes: two real `dupify serve` processes over one
database, with Redis and without, each with the key cached, refuse it on the very next request
after another process (the CLI) revokes it or suspends its account, and take a plan change at
once; and every response of a burst has its usage row."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.kv import SHARED_REDIS_URL, delete_prefix
from support.servers import (
    Server,
    clean_env,
    new_account_key,
    run_dupify,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow


@dataclass
class Pair:
    servers: tuple[Server, Server]
    workdir: Path
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        return run_dupify(self.workdir, self.env, *args)

    def new_key(self) -> tuple[str, str, str]:
        """A new free-plan account and its key: (email, key id, key)."""
        email, key = new_account_key(self.workdir, self.env)
        listed = json.loads(self.cli("key", "list", "--account", email, "--json"))
        return email, listed[0]["id"], key


@pytest.fixture(scope="module", params=["database", "redis"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    """Two servers on one SQLite database; with the shared Redis too in the "redis" mode."""
    workdir = tmp_path_factory.mktemp(f"key-cache-{request.param}")
    prefix = f"dupifytest{secrets.token_hex(6)}"
    env = clean_env(
        DUPIFY_SECRET_KEY="shared-secret-" + "k" * 40,
        DUPIFY_PLANS__FREE__REQUESTS_PER_MINUTE="1000",
        DUPIFY_USAGE_LOG__FLUSH_INTERVAL_S="0.2",
    )
    if request.param == "redis":
        env.update(
            DUPIFY_REDIS_URL=SHARED_REDIS_URL,
            DUPIFY_REDIS__KEY_PREFIX=prefix,
            DUPIFY_REDIS__TIMEOUT_S="2",  # the promise is the subject here, not Redis faults
        )
    first = start_server(workdir, env)
    try:
        second = start_server(workdir, env)
    except BaseException:
        stop_server(first)
        raise
    yield Pair((first, second), workdir, env)
    for server in (first, second):
        if server.process.poll() is None:
            stop_server(server)
    if request.param == "redis":
        delete_prefix(SHARED_REDIS_URL, prefix)


def models(server: Server, key: str) -> httpx.Response:
    return httpx.get(
        server.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def cache_it(pair: Pair, key: str) -> None:
    """Two requests on each server: the first looks the key up, the second is a cache hit."""
    for server in pair.servers:
        for _ in range(2):
            assert models(server, key).status_code == 200


def test_a_revoked_key_is_refused_on_the_next_request_by_both(pair: Pair) -> None:
    _, key_id, key = pair.new_key()
    cache_it(pair, key)
    pair.cli("key", "revoke", key_id)
    for server in pair.servers:
        refused = models(server, key)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"


def test_a_suspended_account_is_refused_then_reinstated_by_both(pair: Pair) -> None:
    email, key_id, key = pair.new_key()
    cache_it(pair, key)
    pair.cli("account", "suspend", email)
    for server in pair.servers:
        refused = models(server, key)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "account_suspended"
    pair.cli("account", "unsuspend", email)
    for server in pair.servers:
        assert models(server, key).status_code == 200
    pair.cli("key", "suspend", key_id)
    for server in pair.servers:
        assert models(server, key).status_code == 403


def test_a_plan_change_applies_on_the_next_request_on_both(pair: Pair) -> None:
    email, _, key = pair.new_key()
    cache_it(pair, key)
    pair.cli("account", "set-plan", email, "pro")
    free = int(pair.env["DUPIFY_PLANS__FREE__REQUESTS_PER_MINUTE"])
    for server in pair.servers:
        limit = int(models(server, key).headers["X-RateLimit-Limit"])
        assert limit != free


def logged_requests(workdir: Path, key_id: str) -> int:
    with sqlite3.connect(workdir / "dupify.db") as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM request_logs WHERE key_id = ?", (key_id,)
        ).fetchone()
    return int(count)


def test_every_response_of_a_burst_has_its_usage_row(pair: Pair) -> None:
    _, key_id, key = pair.new_key()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(
                *(
                    client.get(
                        pair.servers[index % 2].base_url + "/v1/models",
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for index in range(60)
                )
            )
        return [response.status_code for response in responses]

    assert asyncio.run(burst()) == [200] * 60
    # Rows are written in batches (every 0.2 s here): wait for them, then count exactly.
    deadline = time.monotonic() + 30
    while logged_requests(pair.workdir, key_id) < 60 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert logged_requests(pair.workdir, key_id) == 60

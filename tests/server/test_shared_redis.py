"""Several workers, one truth: two real `dupify serve` processes over one database and one Redis
share the rate limit, the monthly quota and the result cache, and both refuse a revoked key on
its next request."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.kv import SHARED_REDIS_URL, delete_prefix
from support.samples import noise_png
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
    first: Server
    second: Server
    workdir: Path
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        return run_dupify(self.workdir, self.env, *args)

    def new_key(self) -> tuple[str, str]:
        """A new free-plan account and its key: (email, key)."""
        return new_account_key(self.workdir, self.env)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("two-workers")
    prefix = f"dupifytest{secrets.token_hex(6)}"
    env = clean_env(
        DUPIFY_SECRET_KEY="shared-secret-" + "z" * 40,
        DUPIFY_REDIS_URL=SHARED_REDIS_URL,
        DUPIFY_REDIS__KEY_PREFIX=prefix,
        DUPIFY_REDIS__TIMEOUT_S="2",  # exact shared counts are the subject here, not faults
        DUPIFY_PLANS__FREE__REQUESTS_PER_MINUTE="5",
        DUPIFY_PLANS__FREE__IMAGES_PER_MONTH="6",
    )
    first = start_server(workdir, env)
    try:
        second = start_server(workdir, env)
    except BaseException:
        stop_server(first)
        raise
    yield Pair(first, second, workdir, env)
    for server in (first, second):
        if server.process.poll() is None:
            stop_server(server)
    delete_prefix(SHARED_REDIS_URL, prefix)


def embed(server: Server, key: str, *images: bytes) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/embeddings",
        json={"input": [base64.b64encode(image).decode() for image in images]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def models(server: Server, key: str) -> httpx.Response:
    return httpx.get(
        server.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def test_the_rate_limit_is_shared(pair: Pair) -> None:
    _, key = pair.new_key()
    servers = [pair.first, pair.second, pair.first, pair.second, pair.first]
    remaining = [models(server, key).headers["X-RateLimit-Remaining"] for server in servers]
    assert remaining == ["4", "3", "2", "1", "0"]
    for server in (pair.second, pair.first):
        refused = models(server, key)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1


def test_the_quota_is_shared(pair: Pair) -> None:
    _, key = pair.new_key()
    images = [noise_png(24, 24, seed=seed) for seed in range(20, 26)]
    assert embed(pair.first, key, *images[:3]).status_code == 200
    assert embed(pair.second, key, *images[3:]).status_code == 200
    refused = embed(pair.first, key, images[0])
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    time.sleep(1.5)  # the other worker's log rows are written within its flush interval (1 s)
    usage = httpx.get(
        pair.second.base_url + "/v1/usage",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert usage.status_code == 200, usage.text
    assert usage.json()["plan"]["images_used"] == 6
    assert usage.json()["totals"]["images"] == 6


def test_the_cache_is_shared(pair: Pair) -> None:
    _, key = pair.new_key()
    photo = noise_png(40, 40, seed=77)
    first = embed(pair.first, key, photo)
    assert first.status_code == 200 and first.headers["X-Cache"] == "miss"
    second = embed(pair.second, key, photo)
    assert second.status_code == 200 and second.headers["X-Cache"] == "hit"
    assert second.json()["data"] == first.json()["data"]


def test_a_revoked_key_is_refused_by_every_worker_at_once(pair: Pair) -> None:
    email, key = pair.new_key()
    assert models(pair.first, key).status_code == 200
    assert models(pair.second, key).status_code == 200
    listed = json.loads(pair.cli("key", "list", "--account", email, "--json"))
    pair.cli("key", "revoke", listed[0]["id"])
    for server in (pair.first, pair.second):
        refused = models(server, key)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"


def test_a_suspended_account_is_refused_by_every_worker_at_once(pair: Pair) -> None:
    email, key = pair.new_key()
    assert models(pair.first, key).status_code == 200
    assert models(pair.second, key).status_code == 200
    # An operator's suspension (the admin page and the CLI share the service), from a third
    # process: both servers have the key cached and learn of it through the revocation signal.
    pair.cli("account", "suspend", email)
    for server in (pair.first, pair.second):
        refused = models(server, key)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "account_suspended"

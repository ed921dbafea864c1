"""Load with faults, end to end: two real `dupify serve` processes on PostgreSQL share a Redis of
the test's own; a few clients on two accounts send image requests to both for a while; Redis is
restarted in the middle, then one server gets SIGTERM (a graceful stop) and the clients carry on
with the other. At the end every billed answer is a request-log row with the same images, and
the quota (GET /v1/usage's and the Redis counter) equals the log's images for the month, for
both accounts; no 5xx but documented 503s with Retry-After."""

from __future__ import annotations

import base64
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dupify.accounts.service import create_account
from dupify.db import create_db_engine, session_factory, transaction, utcnow
from dupify.keys.service import create_key
from dupify.limits.kv import keyed_tag
from dupify.limits.ratelimit import month_of
from dupify.usage.models import RequestLog
from support.contract import documented_statuses, openapi_document
from support.fixtures import migrated_postgres_database
from support.kv import RedisServer
from support.samples import noise_png
from support.servers import Server, clean_env, start_server, stop_server

pytestmark = pytest.mark.slow

SECRET = "load-test-secret-" + "q" * 40
PREFIX = "dupifyload"
TRAFFIC_S = 12.0  # a few hundred requests: enough before, between and after both faults
REDIS_RESTART_AT_S = 4.0
SIGTERM_AT_S = 8.0
CLIENTS = 4
MAX_REQUESTS = 2000  # a bound on the loop besides its time
PACE_S = 0.05  # each client's pause between requests: a few hundred in all
UNDECODABLE = b"this is not an image"
DOCUMENT = openapi_document()


@dataclass
class Answer:
    account: str
    path: str
    status: int
    request_id: str
    images: int  # what the answer says was billed (usage.images of a 200)
    retry_after: str | None
    phase: str


@dataclass
class Traffic:
    """Clients sending image requests to the servers still in rotation, until told to stop."""

    servers: list[Server]
    keys: dict[str, str]  # account id -> key
    answers: list[Answer] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # requests that got no answer, and why
    stopping: threading.Event = field(default_factory=threading.Event)
    out_of_rotation: set[int] = field(default_factory=set)
    phase: str = "before the faults"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sent: int = 0

    def _next_request(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        """One request (path, httpx arguments): mostly embeddings in the three body forms, some
        with an undecodable image (billed nothing), analyze with one bad image of two (billed
        one), compare and duplicates."""
        images = [noise_png(24, 24, seed=rng.randrange(1_000_000)) for _ in range(3)]
        kind = rng.randrange(10)
        encoded = [base64.b64encode(image).decode() for image in images]
        if kind <= 3:
            return "/v1/embeddings", {"json": {"input": encoded[: 1 + kind % 3]}}
        if kind == 4:
            return "/v1/embeddings", {"files": [("file", ("a.png", images[0], "image/png"))]}
        if kind == 5:
            return "/v1/embeddings", {
                "content": images[0],
                "headers": {"Content-Type": "image/png"},
            }
        if kind == 6:
            return "/v1/embeddings", {"json": {"input": base64.b64encode(UNDECODABLE).decode()}}
        if kind == 7:
            bad = base64.b64encode(UNDECODABLE).decode()
            return "/v1/analyze", {"json": {"input": [encoded[0], bad], "features": ["hashes"]}}
        if kind == 8:
            return "/v1/compare", {"json": {"a": encoded[0], "b": encoded[1]}}
        return "/v1/duplicates", {"json": {"input": encoded}}

    def _take_turn(self) -> bool:
        with self._lock:
            if self.stopping.is_set() or self._sent >= MAX_REQUESTS:
                return False
            self._sent += 1
            return True

    def client(self, index: int) -> None:
        rng = random.Random(index)
        account = sorted(self.keys)[index % len(self.keys)]
        headers = {"Authorization": f"Bearer {self.keys[account]}"}
        sessions = [httpx.Client(base_url=server.base_url, timeout=60) for server in self.servers]
        try:
            turn = 0
            while self._take_turn():
                turn += 1
                live = [n for n in range(len(self.servers)) if n not in self.out_of_rotation]
                http = sessions[live[(index + turn) % len(live)]]
                path, arguments = self._next_request(rng)
                extra = arguments.pop("headers", {})
                try:
                    response = http.post(path, headers={**headers, **extra}, **arguments)
                except httpx.HTTPError as exc:
                    self.lost.append(f"{path} to {http.base_url}: {type(exc).__name__}")
                    continue
                billed = response.json()["usage"]["images"] if response.status_code == 200 else 0
                self.answers.append(
                    Answer(
                        account,
                        path,
                        response.status_code,
                        response.headers["X-Request-Id"],
                        billed,
                        response.headers.get("Retry-After"),
                        self.phase,
                    )
                )
                self.stopping.wait(PACE_S)
        finally:
            for session in sessions:
                session.close()


@pytest.fixture
def load_database() -> Iterator[str]:
    """A PostgreSQL database of this test's own, migrated, dropped at the end."""
    with migrated_postgres_database("dupify_load") as url:
        yield url


def new_accounts(database_url: str, count: int) -> dict[str, str]:
    """`count` free-plan accounts, each with a key: account id -> key."""
    engine = create_db_engine(database_url)
    keys = {}
    try:
        with transaction(session_factory(engine)) as session:
            for number in range(count):
                account = create_account(session, email=f"load{number}@example.com", name="Load")
                keys[account.id] = create_key(session, account, secret=SECRET.encode()).secret
    finally:
        engine.dispose()
    return keys


def logged(database_url: str) -> tuple[dict[str, int], dict[str, int]]:
    """From the request log: request id -> images of each row that billed any, and account id ->
    its images this month."""
    engine = create_db_engine(database_url)
    try:
        with Session(engine) as db:
            rows = db.execute(
                select(RequestLog.request_id, RequestLog.images).where(RequestLog.images > 0)
            ).all()
            totals = db.execute(
                select(RequestLog.account_id, func.sum(RequestLog.images))
                .where(RequestLog.created_at >= month_of(utcnow())[0])
                .group_by(RequestLog.account_id)
            ).all()
    finally:
        engine.dispose()
    return {row[0]: row[1] for row in rows}, {row[0]: int(row[1]) for row in totals}


def redis_quota(server: RedisServer, account_id: str) -> int | None:
    """The account's quota counter this month in Redis ('used'), or None when there is none."""
    tag = keyed_tag(SECRET.encode(), "account", account_id)
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    try:
        used = client.hget(f"{PREFIX}:quota:{tag}:{month_of(utcnow())[0]:%Y-%m}", "used")
    finally:
        client.close()
    return None if used is None else int(used)


def stop_traffic(traffic: Traffic, threads: list[threading.Thread]) -> None:
    traffic.stopping.set()
    for thread in threads:
        if thread.ident is not None:  # started
            thread.join(timeout=120)


def test_billing_and_quota_agree_through_a_redis_restart_and_a_sigterm(
    tmp_path: Path, load_database: str, redis_server: RedisServer
) -> None:
    keys = new_accounts(load_database, 2)  # before the servers start: no development account
    env = clean_env(
        DUPIFY_DATABASE_URL=load_database,
        DUPIFY_SECRET_KEY=SECRET,
        DUPIFY_REDIS_URL=redis_server.url,
        DUPIFY_REDIS__KEY_PREFIX=PREFIX,
        DUPIFY_REDIS__TIMEOUT_S="0.2",
        DUPIFY_REDIS__PROBE_INTERVAL_S="0.2",
        DUPIFY_REDIS__PROBE_MAX_INTERVAL_S="0.4",
        DUPIFY_PLANS__FREE__REQUESTS_PER_MINUTE="100000",
        DUPIFY_PLANS__FREE__IMAGES_PER_MONTH="1000000",
        DUPIFY_USAGE_LOG__FLUSH_INTERVAL_S="0.2",
    )
    servers: list[Server] = []
    traffic = Traffic(servers, keys)
    threads = [threading.Thread(target=traffic.client, args=(index,)) for index in range(CLIENTS)]
    try:
        for name in ("first", "second"):
            workdir = tmp_path / name
            workdir.mkdir()
            servers.append(start_server(workdir, env))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(REDIS_RESTART_AT_S)
        redis_server.stop()
        time.sleep(0.5)
        redis_server.start()  # empty, on the same port: every counter is gone
        traffic.phase = "after the Redis restart"
        time.sleep(max(0.0, SIGTERM_AT_S - (time.monotonic() - started)))
        traffic.out_of_rotation.add(0)
        servers[0].process.send_signal(signal.SIGTERM)  # requests under way finish first
        traffic.phase = "after the SIGTERM"
        time.sleep(max(0.0, TRAFFIC_S - (time.monotonic() - started)))
        stop_traffic(traffic, threads)
        # uvicorn shuts down (lifespan included: the usage rows are written), then re-raises the
        # signal, so the exit is by SIGTERM.
        stopped = servers[0].process.wait(timeout=60)
        shutdown = "".join(servers[0].output)
        assert stopped in (0, -signal.SIGTERM), shutdown[-4000:]
        assert "Application shutdown complete" in shutdown, shutdown[-4000:]
        usage = {
            account: httpx.get(
                servers[1].base_url + "/v1/usage",  # it writes its buffered rows first
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
            for account, key in keys.items()
        }
    finally:
        stop_traffic(traffic, threads)
        outputs = [stop_server(server) for server in servers]

    answers = traffic.answers
    phases = Counter(answer.phase for answer in answers)
    assert len(phases) == 3 and min(phases.values()) >= 20, f"too little traffic: {phases}"
    server_errors = [
        (answer.path, answer.status, answer.request_id)
        for answer in answers
        if answer.status >= 500 and not (answer.status == 503 and answer.retry_after)
    ]
    assert not server_errors, f"{server_errors}\n{outputs[0][-3000:]}\n{outputs[1][-3000:]}"
    undocumented = [
        (answer.path, answer.status)
        for answer in answers
        if answer.status not in documented_statuses(DOCUMENT, "POST", answer.path)
    ]
    assert not undocumented, undocumented

    billed = {answer.request_id: answer.images for answer in answers if answer.images > 0}
    log_rows, log_images = logged(load_database)
    answered_not_logged = {rid: n for rid, n in billed.items() if log_rows.get(rid) != n}
    logged_not_answered = {rid: n for rid, n in log_rows.items() if billed.get(rid) != n}
    assert not answered_not_logged and not logged_not_answered, (
        f"billed answers whose log row differs: {answered_not_logged}; "
        f"log rows no answer billed: {logged_not_answered}; lost requests: {traffic.lost}"
    )
    for account in keys:
        answered = sum(answer.images for answer in answers if answer.account == account)
        assert log_images.get(account, 0) == answered
        assert usage[account].status_code == 200, usage[account].text
        quota = {
            "GET /v1/usage images_used": usage[account].json()["plan"]["images_used"],
            "redis counter": redis_quota(redis_server, account),
        }
        assert quota == dict.fromkeys(quota, answered), f"log and answers: {answered}"

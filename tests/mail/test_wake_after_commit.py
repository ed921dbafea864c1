"""Queued mail wakes the sender only once its unit of work has committed: once however many
messages it queued, and never for work that was rolled back (`dupify.db.after_commit`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dupify.db import after_commit, transaction, unit_of_work
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import add_wake_listener, enqueue


@pytest.fixture
def wakes() -> Iterator[list[str]]:
    woken: list[str] = []
    remove = add_wake_listener(lambda: woken.append("woken"))
    yield woken
    remove()


def _queue(session: Session, to: str = "dev@example.com") -> None:
    enqueue(session, kind="security", to_address=to, subject="Hello", body="Hello.\n")


def _queued(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage)) or 0


def test_a_job_wakes_the_sender_after_its_commit_and_once(
    sessions: sessionmaker[Session], wakes: list[str]
) -> None:
    with transaction(sessions) as session:
        for n in range(3):
            _queue(session, f"dev{n}@example.com")
        session.flush()
        assert wakes == []  # queued, not yet committed
    assert wakes == ["woken"] and _queued(sessions) == 3


def test_a_rolled_back_job_queues_nothing_and_wakes_no_one(
    sessions: sessionmaker[Session], wakes: list[str]
) -> None:
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        _queue(session)
        session.flush()
        raise RuntimeError("the job fails after queueing")
    assert wakes == [] and _queued(sessions) == 0


def test_a_job_refuses_an_action_it_cannot_await(sessions: sessionmaker[Session]) -> None:
    async def forget_later() -> None: ...

    with pytest.raises(TypeError, match="unit_of_work"), transaction(sessions) as session:
        after_commit(session, forget_later)


async def test_a_request_runs_its_actions_after_the_commit_and_awaits_async_ones(
    sessions: sessionmaker[Session], wakes: list[str]
) -> None:
    seen: list[str] = []

    async def count_queued() -> None:
        seen.append(f"{_queued(sessions)} queued")

    async with unit_of_work(sessions) as session:
        _queue(session)
        after_commit(session, count_queued)
    assert wakes == ["woken"] and seen == ["1 queued"]

    with pytest.raises(RuntimeError):
        async with unit_of_work(sessions) as session:
            _queue(session)
            after_commit(session, count_queued)
            raise RuntimeError("the request fails")
    assert wakes == ["woken"] and seen == ["1 queued"] and _queued(sessions) == 1

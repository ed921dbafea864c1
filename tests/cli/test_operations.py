"""The operator commands end to end through `dupify`, on both databases, with a real SMTP sink."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update

from dupify.accounts.models import Account
from dupify.db import create_db_engine, session_factory, transaction
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import enqueue
from support.cli import Run
from support.smtp_sink import SmtpSink


def make_account(run: Run, email: str) -> None:
    code, output = run("account", "create", "--email", email, "--name", "Someone")
    assert code == 0, output


def audit(run: Run) -> list[dict[str, str]]:
    code, output = run("audit", "list", "--json")
    assert code == 0, output
    rows: list[dict[str, str]] = json.loads(output)
    return rows


def test_announce_then_send_reaches_the_accounts_that_did_not_object(
    run: Run, sink: SmtpSink, tmp_path: Path, database_url: str
) -> None:
    for email in ("ada@example.com", "grace@example.com", "objector@example.com"):
        make_account(run, email)
    engine = create_db_engine(database_url)
    with transaction(session_factory(engine)) as session:
        session.execute(
            update(Account)
            .where(Account.email == "objector@example.com")
            .values(pref_announcements=False)
        )
    engine.dispose()

    body = tmp_path / "body.txt"
    body.write_text("Scheduled maintenance on Sunday.\n", encoding="utf-8")
    code, output = run("announce", "--subject", "Maintenance", "--body-file", str(body))
    assert code == 0 and "2 accounts" in output, output
    code, output = run("outbox", "send")
    assert code == 0 and "sent 2" in output, output
    assert sorted(r for item in sink.received for r in item.recipients) == [
        "ada@example.com",
        "grace@example.com",
    ]

    code, output = run("announce", "--policy", "--version", "2")
    assert code == 0 and "3 accounts" in output, output
    code, output = run("announce", "--policy", "--version", "2")
    assert code == 0 and "already announced" in output, output
    run("outbox", "send")
    assert len(sink.to("objector@example.com")) == 1  # the policy notice, not the announcement

    code, output = run("outbox", "list", "--json")
    states = {row["state"] for row in json.loads(output)}
    assert code == 0 and states == {"sent"}
    assert [row["event"] for row in audit(run)][:2] == ["policy_announced", "announcement_sent"]

    code, output = run("announce", "--subject", "No body")
    assert code == 2 and "--body-file" in output


def test_suspension_commands_and_their_audit_rows(run: Run) -> None:
    make_account(run, "abuser@example.com")
    code, output = run("key", "create", "--account", "abuser@example.com")
    assert code == 0, output
    code, output = run("key", "list", "--account", "abuser@example.com", "--json")
    key_id = json.loads(output)[0]["id"]

    assert run("account", "suspend", "abuser@example.com")[0] == 0
    code, output = run("account", "list", "--json")
    account = json.loads(output)[0]
    assert account["suspended"] is True
    assert run("account", "unsuspend", "abuser@example.com") == (
        0,
        f"reinstated account {account['id']}\n",
    )
    assert run("key", "suspend", key_id) == (0, f"suspended key {key_id}\n")
    assert run("key", "unsuspend", key_id) == (0, f"reinstated key {key_id}\n")
    code, output = run("key", "suspend", "key_nonexistent")
    assert code == 1 and "no key" in output
    code, output = run("account", "suspend", "nobody@example.com")
    assert code == 1 and "no account" in output

    assert [row["event"] for row in audit(run)] == [
        "key_unsuspended",
        "key_suspended",
        "account_unsuspended",
        "account_suspended",
        "key_created",
    ]
    code, output = run("audit", "list", "--event", "nonsense")
    assert code == 2 and "unknown events" in output


def test_stats_abuse_and_outbox_retry_commands(run: Run, database_url: str) -> None:
    make_account(run, "someone@example.com")
    code, output = run("stats", "--json")
    assert code == 0 and json.loads(output) == []
    code, output = run("abuse", "scan")
    assert code == 0 and "0 new flags" in output
    code, output = run("abuse", "list")
    assert code == 0 and "(none)" in output
    engine = create_db_engine(database_url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        message = enqueue(
            session, kind="security", to_address="a@example.com", subject="S", body="B"
        )
        message.state, message.attempts, message.last_error = "failed", 8, "gave up"
    code, output = run("outbox", "retry")
    assert code == 0 and "1 failed messages" in output, output
    with sessions() as session:
        again = session.get_one(OutboxMessage, message.id)
        assert (again.state, again.attempts, again.last_error) == ("pending", 0, None)
    engine.dispose()

"""Account export (PRIVACY row 15): every stored datum about the account, compared with the
database table by table, and nothing about any other account; the CLI prints the same JSON."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from typer.testing import CliRunner

from dupify.audit.models import AuditEvent
from dupify.cli.main import app as cli
from dupify.db import session_factory, transaction
from dupify.privacy.lifecycle import (
    EXPORT_SECTIONS,
    LINK_MAIL_KINDS,
    SECRET_COLUMNS,
    WITHHELD_BODY,
    export_account,
)
from dupify.schema.tables import Base
from support.account_data import Person, populate
from support.api import Api
from support.cli import cli_env
from support.samples import photo_jpeg


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


async def _traffic(api: Api, person: Person) -> None:
    for content_type, body in (("image/jpeg", photo_jpeg("astronaut")), ("image/jpeg", b"junk")):
        await api.client.post(
            "/v1/embeddings",
            content=body,
            headers={"Authorization": f"Bearer {person.key}", "Content-Type": content_type},
        )


def _cli_export(database_url: str, *args: str) -> str:
    result = CliRunner().invoke(
        cli,
        ["account", "export", *args],
        env=cli_env(database_url),
    )
    assert result.exit_code == 0, result.output
    return result.output


async def test_export_holds_every_stored_datum_and_nothing_about_others(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    sessions = session_factory(api.engine)
    with transaction(sessions) as session:
        mine = populate(session, "wanda")
        other = populate(session, "victor")
        # An operator (the other account) acted on mine: the export says so without naming it.
        session.add(
            AuditEvent(event="account_suspended", actor_account_id=other.id, account_id=mine.id)
        )
    await _traffic(api, mine)
    await _traffic(api, other)
    await api.flush_usage()

    printed = json.loads(_cli_export(database_url, mine.email))
    written = tmp_path / "export.json"
    _cli_export(database_url, mine.email, "--output", str(written))
    from_file = json.loads(written.read_text())
    with sessions() as session:
        direct = export_account(session, mine.id)
    for document in (printed, from_file):
        # The same document (the CLI records each export first, so it holds one more event).
        assert {k: v for k, v in document.items() if k not in ("exported_at", "audit_events")} == {
            k: v for k, v in direct.items() if k not in ("exported_at", "audit_events")
        }
    export = json.loads(json.dumps(direct))

    with sessions() as session:
        _compare_with_database(session, export, mine)

    text = json.dumps(export)
    for needle in [*other.identifiers, *other.key_ids, *other.secrets, *mine.secrets]:
        assert needle not in text, needle
    assert mine.email in text and mine.name in text
    masked = [e for e in export["audit_events"] if e["event"] == "account_suspended"]
    assert [e["actor_account_id"] for e in masked] == ["another account"]
    assert export["account"]["password_set"] is True
    assert [event["event"] for event in export["audit_events"]].count("export") == 2


def _compare_with_database(session: Any, export: dict[str, Any], person: Person) -> None:
    section_of = {model.__tablename__: name for name, (model, _) in EXPORT_SECTIONS.items()}
    section_of["audit_events"] = "audit_events"
    account_row = export["account"]
    owned_tables = [t for t in Base.metadata.sorted_tables if "account_id" in t.columns]
    # A new table that can hold an account's rows must be added to the export.
    assert sorted(t.name for t in owned_tables) == sorted(section_of)
    # The export finds rows by account: a table naming only a key would be missed.
    key_only = [
        table.name
        for table in Base.metadata.sorted_tables
        if "account_id" not in table.columns
        and any(
            column.name == "key_id"
            or any(fk.column.table.name == "api_keys" for fk in column.foreign_keys)
            for column in table.columns
        )
    ]
    assert key_only == []
    accounts = Base.metadata.tables["accounts"]
    row = session.execute(select(accounts).where(accounts.c.id == person.id)).one()._mapping
    for column in accounts.columns:
        if column.key in SECRET_COLUMNS["accounts"]:
            assert column.key not in account_row
        else:
            assert account_row[column.key] == _plain(row[column.key]), column.key
    for table in owned_tables:
        owner = table.c.account_id == person.id
        if "actor_account_id" in table.columns:
            owner = or_(owner, table.c.actor_account_id == person.id)
        rows = session.execute(select(table).where(owner)).all()
        exported = export[section_of[table.name]]
        assert rows, f"the test data has no {table.name} row"
        assert len(exported) == len(rows), table.name
        hidden = SECRET_COLUMNS.get(table.name, frozenset())
        for stored in rows:
            expected = {
                key: _plain(value)
                for key, value in stored._mapping.items()
                if (key not in hidden and key not in ("account_id", "actor_account_id"))
                or value == person.id
            }
            if table.name == "outbox" and expected["kind"] in LINK_MAIL_KINDS:
                expected["body"] = WITHHELD_BODY
            matches = [item for item in exported if expected.items() <= item.items()]
            assert len(matches) == 1, (table.name, expected)
            assert not hidden & matches[0].keys()

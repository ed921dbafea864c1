"""What every `dupify` command shares: the consoles, the settings, one transaction per command."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from dupify.accounts import service as accounts
from dupify.config import Settings
from dupify.db import create_db_engine, session_factory, transaction
from dupify.keys import service as keys
from dupify.keys.signal import publish_through

console = Console()
errors = Console(stderr=True)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            errors.print(f"[red]configuration error:[/red] {error['msg']}")
        raise typer.Exit(2) from exc


@contextmanager
def command_transaction(settings: Settings) -> Iterator[Session]:
    """A transaction for one command; a service error becomes a clean message and exit code 1."""
    engine = create_db_engine(settings.database_url)
    publish_through(engine, settings)  # revocations reach the servers' key caches via Redis
    try:
        with transaction(session_factory(engine)) as session:
            yield session
    except (accounts.AccountError, keys.KeyRequestError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


def print_rows(rows: Sequence[Mapping[str, object]], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        console.print("(none)")
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row.values()))
    console.print(table)

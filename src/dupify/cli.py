"""The `dupify` command: serve, migrate, and manage accounts, keys and models from a shell."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from dupify import migrate as migrations
from dupify.accounts import service as accounts
from dupify.config import Settings
from dupify.db import create_db_engine, session_factory, transaction
from dupify.keys import service as keys
from dupify.secret import server_secret

app = typer.Typer(help="Dupify: image embeddings and analysis.", no_args_is_help=True)
account_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
key_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
models_app = typer.Typer(help="The bundled models.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(key_app, name="key")
app.add_typer(models_app, name="models")

console = Console()
errors = Console(stderr=True)
DEV_ACCOUNT_EMAIL = "developer@example.com"


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            errors.print(f"[red]configuration error:[/red] {error['msg']}")
        raise typer.Exit(2) from exc


@contextmanager
def unit_of_work(settings: Settings) -> Iterator[Session]:
    """A transaction for one command; a service error becomes a clean message and exit code 1."""
    engine = create_db_engine(settings.database_url)
    try:
        with transaction(session_factory(engine)) as session:
            yield session
    except (accounts.AccountError, keys.KeyRequestError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the latest version."""
    settings = load_settings()
    engine = create_db_engine(settings.database_url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    console.print("database is up to date")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
) -> None:
    """Serve the API (development: creates a local account and prints a key on first start)."""
    import uvicorn

    settings = load_settings()
    bind_host, bind_port = host or settings.host, port or settings.port
    if not settings.is_production:
        _bootstrap_development_account(settings, f"http://{bind_host}:{bind_port}")
    uvicorn.run(
        "dupify.app:app_from_environment",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_level=settings.log_level,
        proxy_headers=False,
    )


def _bootstrap_development_account(settings: Settings, base_url: str) -> None:
    """First development start: one local account and a key, printed once (never in production)."""
    with unit_of_work(settings) as session:
        if accounts.list_accounts(session):
            console.print(
                "Create an API key with: "
                f"[bold].venv/bin/dupify key create --account {DEV_ACCOUNT_EMAIL}[/bold]"
            )
            return
        account = accounts.create_account(
            session, email=DEV_ACCOUNT_EMAIL, name="Local developer", plan="pro"
        )
        created = keys.create_key(
            session, account, secret=server_secret(settings), name="first key"
        )
    console.print(f"Created the local account [bold]{DEV_ACCOUNT_EMAIL}[/bold] and an API key.")
    console.print("Your API key (shown once, keep it):")
    console.print(created.secret, highlight=False, soft_wrap=True)
    console.print(
        f"Try: curl -H 'Authorization: Bearer {created.secret}' "
        f"-F file=@photo.jpg {base_url}/v1/embeddings",
        highlight=False,
        soft_wrap=True,
    )


@account_app.command("create")
def account_create(
    email: Annotated[str, typer.Option(help="Email address (unique).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    plan: Annotated[str, typer.Option(help="Plan name.")] = "free",
    admin: Annotated[bool, typer.Option(help="Give the operator role.")] = False,
) -> None:
    """Create an account."""
    with unit_of_work(load_settings()) as session:
        account = accounts.create_account(
            session, email=email, name=name, plan=plan, role="admin" if admin else "user"
        )
        console.print(f"created account {account.id} <{account.email}>", highlight=False)


@account_app.command("list")
def account_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the accounts."""
    with unit_of_work(load_settings()) as session:
        rows = [
            {
                "id": account.id,
                "email": account.email,
                "name": account.name,
                "plan": account.plan,
                "role": account.role,
                "suspended": account.suspended_at is not None,
                "created_at": account.created_at.isoformat(),
            }
            for account in accounts.list_accounts(session)
        ]
    _print_rows(rows, as_json)


@key_app.command("create")
def key_create(
    account: Annotated[str, typer.Option(help="The account's email.")],
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "default",
    scopes: Annotated[
        str | None, typer.Option(help="Comma-separated: embeddings,analyze,usage:read.")
    ] = None,
    expires_days: Annotated[
        int | None, typer.Option(min=1, help="Expire after this many days.")
    ] = None,
) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    settings = load_settings()
    with unit_of_work(settings) as session:
        owner = accounts.require_by_email(session, account)
        created = keys.create_key(
            session,
            owner,
            secret=server_secret(settings),
            name=name,
            scopes=keys.parse_scopes(scopes),
            expires_in=timedelta(days=expires_days) if expires_days else None,
        )
        record = created.record
        console.print(
            f"created key {record.id} ({record.name}; scopes: {record.scopes}; "
            f"expires: {record.expires_at.isoformat() if record.expires_at else 'never'}). "
            "It is shown once:",
            highlight=False,
        )
    sys.stdout.write(created.secret + "\n")


@key_app.command("list")
def key_list(
    account: Annotated[str, typer.Option(help="The account's email.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List an account's keys (display prefixes only; keys are never stored)."""
    with unit_of_work(load_settings()) as session:
        owner = accounts.require_by_email(session, account)
        rows = [
            {
                "id": key.id,
                "name": key.name,
                "prefix": f"dpy_{key.display_prefix}…",
                "scopes": key.scopes,
                "created_at": key.created_at.isoformat(),
                "expires_at": key.expires_at.isoformat() if key.expires_at else None,
                "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
                "revoked": key.revoked_at is not None,
            }
            for key in keys.list_keys(session, owner.id)
        ]
    _print_rows(rows, as_json)


@key_app.command("revoke")
def key_revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_…).")]) -> None:
    """Revoke a key: it is refused from the next request on."""
    with unit_of_work(load_settings()) as session:
        record = keys.revoke_key(session, key_id)
        console.print(f"revoked key {record.id}", highlight=False)


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the bundled models."""
    from dupify.vision.registry import ModelRegistry

    registry = ModelRegistry(load_settings().inference)
    _print_rows(registry.describe(), as_json)


def _print_rows(rows: Sequence[Mapping[str, object]], as_json: bool) -> None:
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

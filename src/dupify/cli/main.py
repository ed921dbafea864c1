"""The `dupify` command: serve, migrate, and manage accounts, keys and models from a shell."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dupify.accounts import service as accounts
from dupify.audit.service import record_event
from dupify.cli.common import command_transaction, console, errors, load_settings, print_rows
from dupify.cli.files import file_commands
from dupify.cli.models import models_app
from dupify.cli.operations import (
    abuse_app,
    account_commands,
    audit_app,
    key_commands,
    outbox_app,
    top_level,
)
from dupify.cli.worker import worker_app
from dupify.config import Settings
from dupify.db import create_db_engine, session_factory
from dupify.keys import service as keys
from dupify.keys.secret import server_secret
from dupify.keys.signal import credentials_changed
from dupify.schema import migrate as migrations

app = typer.Typer(help="Dupify: image embeddings and analysis.", no_args_is_help=True)
account_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
key_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(key_app, name="key")
app.add_typer(models_app, name="models")
# Operator commands (dupify.cli.operations): announce, stats, suspension, outbox, audit, abuse.
app.add_typer(top_level)
app.add_typer(file_commands)
account_app.add_typer(account_commands)
key_app.add_typer(key_commands)
app.add_typer(outbox_app, name="outbox")
app.add_typer(audit_app, name="audit")
app.add_typer(abuse_app, name="abuse")
app.add_typer(worker_app, name="worker")  # dupify.cli.worker: the GPU inference worker

DEV_ACCOUNT_EMAIL = "developer@example.com"


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
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS, TLS 1.3 only.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
) -> None:
    """Serve the API (development: creates a local account and prints a key on first start)."""
    import uvicorn

    from dupify.inference.catalog import ModelsFileError, read_models_file
    from dupify.server.http import GuardedHttpProtocol
    from dupify.server.tls import tls13_only_context

    settings = load_settings()
    if (tls_cert is None) != (tls_key is None):
        errors.print("[red]error:[/red] --tls-cert and --tls-key go together")
        raise typer.Exit(2)
    try:
        # A models file that does not parse stops here with the field named, not in a traceback
        # from the server's start-up (which still checks each model's files and graph).
        read_models_file(settings.models_file)
    except ModelsFileError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    scheme = "https" if tls_cert else "http"
    bind_host, bind_port = host or settings.host, port or settings.port
    if not settings.is_production:
        _bootstrap_development_account(settings, f"{scheme}://{bind_host}:{bind_port}")
    uvicorn.run(
        "dupify.app:app_from_environment",
        factory=True,
        # Bounded request heads and bodies, refused in the error envelope (docs/operations.md).
        http=GuardedHttpProtocol,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_level=settings.log_level,
        # No access log: its lines carry the client's address, which the policy does not
        # collect; every /v1 request is recorded (without it) in the request log table.
        access_log=False,
        proxy_headers=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        ssl_context_factory=tls13_only_context if tls_cert else None,
    )


def _bootstrap_development_account(settings: Settings, base_url: str) -> None:
    """First development start: one local account and a key, printed once (never in production)."""
    with command_transaction(settings) as session:
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
    settings = load_settings()
    _require_known_plan(settings, plan)
    with command_transaction(settings) as session:
        account = accounts.create_account(
            session, email=email, name=name, plan=plan, role="admin" if admin else "user"
        )
        console.print(f"created account {account.id} <{account.email}>", highlight=False)


def _require_known_plan(settings: Settings, plan: str) -> None:
    if plan not in settings.plans:
        errors.print(
            f"[red]error:[/red] unknown plan {plan!r}; this deployment has: "
            + ", ".join(sorted(settings.plans))
        )
        raise typer.Exit(1)


@account_app.command("set-plan")
def account_set_plan(
    email: Annotated[str, typer.Argument(help="The account's email.")],
    plan: Annotated[str, typer.Argument(help="Plan name (see DUPIFY_PLANS__*).")],
) -> None:
    """Move an account to another plan; its limits apply from its next request."""
    settings = load_settings()
    _require_known_plan(settings, plan)
    with command_transaction(settings) as session:
        account = accounts.require_by_email(session, email)
        previous, account.plan = account.plan, plan
        credentials_changed(session)  # servers' key caches hold the plan (keys.signal)
        limits = settings.plans[plan]
        console.print(
            f"{account.email}: plan {previous} -> {plan} ({limits.requests_per_minute} "
            f"requests/minute per key, {limits.images_per_month} images/month)",
            highlight=False,
        )


@account_app.command("list")
def account_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the accounts."""
    with command_transaction(load_settings()) as session:
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
    print_rows(rows, as_json)


@account_app.command("delete")
def account_delete(
    email: Annotated[str, typer.Argument(help="The account's email.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an account and every datum about it; a tombstone without personal data remains."""
    import asyncio

    from dupify.limits.kv import KvUnavailable
    from dupify.privacy import lifecycle

    settings = load_settings()
    with command_transaction(settings) as session:
        account_id = accounts.require_by_email(session, email).id
    if not yes and not typer.confirm(f"Delete {email} and all its data? This cannot be undone"):
        raise typer.Exit(1)
    try:
        report = asyncio.run(lifecycle.delete_account_outside_server(settings, account_id))
    except lifecycle.AccountNotFound:
        errors.print("[red]error:[/red] the account was deleted meanwhile")
        raise typer.Exit(1) from None
    except KvUnavailable as exc:
        errors.print("[red]error:[/red] Redis is unreachable; nothing was deleted, try again")
        raise typer.Exit(1) from exc
    removed = sum(report.rows_removed.values())
    console.print(f"deleted the account: {removed} rows, {report.cached_results} cached results")


@account_app.command("export")
def account_export(
    email: Annotated[str, typer.Argument(help="The account's email.")],
    output: Annotated[
        Path | None, typer.Option(help="Write the JSON to this file instead of stdout.")
    ] = None,
) -> None:
    """Print every stored datum about an account as JSON (the same as the portal's download)."""
    from dupify.privacy import lifecycle

    with command_transaction(load_settings()) as session:
        account = accounts.require_by_email(session, email)
        record_event(session, "export", account_id=account.id, detail="via=cli")
        document = json.dumps(lifecycle.export_account(session, account.id), indent=2)
    if output is None:
        sys.stdout.write(document + "\n")
        return
    output.write_text(document + "\n", encoding="utf-8")
    console.print(f"wrote the export to {output}", highlight=False)


@app.command()
def purge() -> None:
    """Run every retention rule now and print what it removed."""
    from dupify.privacy import retention

    settings = load_settings()
    engine = create_db_engine(settings.database_url)
    try:
        removed = retention.run_database_rules(session_factory(engine), settings)
    finally:
        engine.dispose()
    table = Table("rule", "removes", "rows removed")
    for rule, (name, count) in zip(retention.RULES, removed, strict=True):
        table.add_row(name, rule.removes, str(count))
    console.print(table)
    console.print(
        "(expired result-cache entries: the embedded cache purges itself inside the server; "
        "Redis drops them by TTL)"
    )


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
    with command_transaction(settings) as session:
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
    with command_transaction(load_settings()) as session:
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
    print_rows(rows, as_json)


@key_app.command("revoke")
def key_revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_…).")]) -> None:
    """Revoke a key: it is refused from the next request on."""
    with command_transaction(load_settings()) as session:
        record = keys.revoke_key(session, key_id)
        console.print(f"revoked key {record.id}", highlight=False)

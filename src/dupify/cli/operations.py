"""Operator commands: suspension, announcements and policy notices, the outbox, the audit log,
abuse flags and service analytics. `dupify.cli.main` merges these groups into `dupify`."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import typer
from sqlalchemy import func, select, update

from dupify.abuse import service as abuse
from dupify.abuse.models import AbuseFlag
from dupify.abuse.monitor import scan_for_abuse
from dupify.accounts import service as accounts
from dupify.audit.service import EVENTS, list_events
from dupify.cli.common import command_transaction, console, errors, load_settings, print_rows
from dupify.db import create_db_engine, session_factory, utcnow
from dupify.mail.announcements import announce as queue_announcement
from dupify.mail.delivery import MailSender
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import OutboxError
from dupify.privacy.policy import announce_policy_change
from dupify.usage.analytics import usage_by_day_plan_endpoint

top_level = typer.Typer()  # merged into `dupify`: announce, stats
account_commands = typer.Typer()  # merged into `dupify account`
key_commands = typer.Typer()  # merged into `dupify key`
outbox_app = typer.Typer(help="The outbox: queued, sent and failed email.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log of security events.", no_args_is_help=True)
abuse_app = typer.Typer(help="Abuse flags raised on API keys.", no_args_is_help=True)


def _privacy_url(public_url: str | None) -> str | None:
    return f"{public_url.rstrip('/')}/privacy" if public_url else None


def _set_suspended(kind: Literal["account", "key"], name: str, suspended: bool) -> None:
    """Suspend or reinstate an account (kind "account", `name` its email) or a key (kind "key",
    `name` its id), and say so."""
    with command_transaction(load_settings()) as session:
        if kind == "account":
            target_id = accounts.require_by_email(session, name).id
            abuse.set_account_suspended(session, target_id, suspended)
        else:
            target_id = name
            abuse.set_key_suspended(session, target_id, suspended)
    console.print(
        f"{'suspended' if suspended else 'reinstated'} {kind} {target_id}", highlight=False
    )


@account_commands.command("suspend")
def account_suspend(email: Annotated[str, typer.Argument(help="The account's email.")]) -> None:
    """Suspend an account: its keys get 403 from the next request, its portal sessions end."""
    _set_suspended("account", email, True)


@account_commands.command("unsuspend")
def account_unsuspend(email: Annotated[str, typer.Argument(help="The account's email.")]) -> None:
    """Lift an account's suspension."""
    _set_suspended("account", email, False)


@key_commands.command("suspend")
def key_suspend(key_id: Annotated[str, typer.Argument(help="The key id (key_…).")]) -> None:
    """Suspend one API key: 403 `account_suspended` from the next request."""
    _set_suspended("key", key_id, True)


@key_commands.command("unsuspend")
def key_unsuspend(key_id: Annotated[str, typer.Argument(help="The key id (key_…).")]) -> None:
    """Lift a key's suspension."""
    _set_suspended("key", key_id, False)


@top_level.command()
def announce(
    subject: Annotated[str | None, typer.Option(help="The announcement's subject.")] = None,
    body_file: Annotated[
        Path | None, typer.Option(help="A UTF-8 text file with the announcement's body.")
    ] = None,
    policy: Annotated[
        bool, typer.Option("--policy", help="Send the policy-change notice instead.")
    ] = False,
    version: Annotated[
        int | None, typer.Option(help="With --policy: the version (default: policy_version).")
    ] = None,
) -> None:
    """Queue an announcement, or (--policy) the policy-change notice.

    An announcement goes to every account that has not objected to announcements; the policy
    notice goes to every account, once per version. The server's mail sender delivers them.
    """
    settings = load_settings()
    if policy:
        chosen = version or settings.policy_version
        engine = create_db_engine(settings.database_url)
        try:
            queued = announce_policy_change(
                session_factory(engine),
                chosen,
                privacy_url=_privacy_url(settings.portal.public_url),
            )
        finally:
            engine.dispose()
        if queued is None:
            console.print(f"policy version {chosen} was already announced (or is the first)")
        else:
            console.print(f"queued the policy version {chosen} notice to {queued} accounts")
        return
    if subject is None or body_file is None:
        errors.print("[red]error:[/red] give --subject and --body-file (or --policy)")
        raise typer.Exit(2)
    try:
        body = body_file.read_text(encoding="utf-8")
        with command_transaction(settings) as session:
            queued = queue_announcement(session, subject=subject, body=body)
    except (OSError, UnicodeDecodeError, OutboxError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"queued the announcement to {queued} accounts (objections honoured)")


@top_level.command()
def stats(
    days: Annotated[int, typer.Option(min=1, max=400, help="How many days back.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Service analytics: requests, errors and images by day, plan and endpoint.

    Accounts that objected to the use of their usage data for analytics are left out.
    """
    until = utcnow()
    with command_transaction(load_settings()) as session:
        rows = usage_by_day_plan_endpoint(session, since=until - timedelta(days=days), until=until)
    print_rows([vars(row) for row in rows], as_json)


@outbox_app.command("list")
def outbox_list(
    state: Annotated[str | None, typer.Option(help="pending, sent or failed.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The newest messages with their delivery state (bodies are not printed)."""
    query = select(OutboxMessage).order_by(OutboxMessage.created_at.desc()).limit(limit)
    if state:
        query = query.where(OutboxMessage.state == state)
    with command_transaction(load_settings()) as session:
        rows = [
            {
                "id": message.id,
                "kind": message.kind,
                "to": message.to_address,
                "subject": message.subject,
                "state": message.state,
                "attempts": message.attempts,
                "next_attempt_at": message.next_attempt_at.isoformat(),
                "last_error": message.last_error,
                "created_at": message.created_at.isoformat(),
            }
            for message in session.scalars(query)
        ]
    print_rows(rows, as_json)


@outbox_app.command("send")
def outbox_send() -> None:
    """Deliver every due message now, from this shell (the server does this by itself)."""
    settings = load_settings()
    engine = create_db_engine(settings.database_url)
    try:
        report = asyncio.run(MailSender(session_factory(engine), settings).deliver_all_due())
    finally:
        engine.dispose()
    console.print(
        f"sent {report.sent}, to retry {report.retrying}, failed {report.failed}",
        highlight=False,
    )


@outbox_app.command("retry")
def outbox_retry() -> None:
    """Give every failed message a fresh set of attempts, due now."""
    with command_transaction(load_settings()) as session:
        result = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.state == "failed")
            .values(state="pending", attempts=0, next_attempt_at=utcnow(), last_error=None)
        )
        count = getattr(result, "rowcount", 0)
    console.print(f"{count} failed messages queued again")


@audit_app.command("list")
def audit_list(
    account: Annotated[str | None, typer.Option(help="Only events about this account id.")] = None,
    event: Annotated[list[str] | None, typer.Option(help="Only these events (repeatable).")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Only the last N days.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Security events, newest first (ids only: the audit log holds no personal data)."""
    unknown = sorted(set(event or ()) - set(EVENTS))
    if unknown:
        errors.print(f"[red]error:[/red] unknown events {', '.join(unknown)}")
        raise typer.Exit(2)
    since = utcnow() - timedelta(days=days) if days else None
    with command_transaction(load_settings()) as session:
        rows = [
            {
                "id": row.id,
                "at": row.created_at.isoformat(),
                "event": row.event,
                "actor": row.actor_account_id,
                "account": row.account_id,
                "key": row.key_id,
                "detail": row.detail,
            }
            for row in list_events(
                session, account_id=account, events=event, since=since, limit=limit
            )
        ]
    print_rows(rows, as_json)


@abuse_app.command("list")
def abuse_list(
    include_resolved: Annotated[bool, typer.Option("--all", help="Resolved flags too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Abuse flags, newest first: open ones unless --all."""
    with command_transaction(load_settings()) as session:
        rows = [
            {
                "id": flag.id,
                "at": flag.created_at.isoformat(),
                "kind": flag.kind,
                "account": flag.account_id,
                "key": flag.key_id,
                "detail": flag.detail,
                "resolved_at": flag.resolved_at.isoformat() if flag.resolved_at else None,
            }
            for flag in abuse.list_flags(session, include_resolved=include_resolved)
        ]
    print_rows(rows, as_json)


@abuse_app.command("resolve")
def abuse_resolve(flag_id: Annotated[int, typer.Argument(help="The flag's id.")]) -> None:
    """Mark a flag reviewed."""
    with command_transaction(load_settings()) as session:
        abuse.resolve_flag(session, flag_id)
    console.print(f"resolved flag {flag_id}")


@abuse_app.command("scan")
def abuse_scan() -> None:
    """Look at the last window's traffic now and raise the flags it calls for."""
    settings = load_settings()
    with command_transaction(settings) as session:
        flags = scan_for_abuse(session, settings.abuse, utcnow())
        open_flags = session.scalar(
            select(func.count()).select_from(AbuseFlag).where(AbuseFlag.resolved_at.is_(None))
        )
        described = [f"{flag.kind} on {flag.key_id}: {flag.detail}" for flag in flags]
    for line in described:
        sys.stdout.write(line + "\n")
    console.print(f"{len(described)} new flags; {open_flags} open in all")

"""Imports every table so `Base.metadata` is complete (Alembic and the schema tests use it)."""

from dupify.abuse.models import AbuseFlag
from dupify.accounts.models import Account, DeletionTombstone, OneTimeToken, WebSession
from dupify.audit.models import AuditEvent
from dupify.db import Base
from dupify.jobs.models import JobLease
from dupify.keys.models import ApiKey, CredentialSignal
from dupify.mail.models import OutboxMessage
from dupify.privacy.models import PolicyAcknowledgement, PolicyNotice, PolicyVersion
from dupify.usage.models import RequestLog

__all__ = [
    "AbuseFlag",
    "Account",
    "ApiKey",
    "AuditEvent",
    "Base",
    "CredentialSignal",
    "DeletionTombstone",
    "JobLease",
    "OneTimeToken",
    "OutboxMessage",
    "PolicyAcknowledgement",
    "PolicyNotice",
    "PolicyVersion",
    "RequestLog",
    "WebSession",
]

"""Imports every table so `Base.metadata` is complete (Alembic and the schema tests use it)."""

from dupify.accounts.models import Account
from dupify.db import Base
from dupify.keys.models import ApiKey
from dupify.usage.models import RequestLog

__all__ = ["Account", "ApiKey", "Base", "RequestLog"]

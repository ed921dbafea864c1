"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect

from dupify.db import create_db_engine
from dupify.schema.migrate import pending_model_changes

# PRIVACY.md row 1: email and name, password hash, plan, preferences, timestamps; the role and
# suspension are the operator's flags, not personal data.
ACCOUNT_COLUMNS = {
    "id",
    "email",
    "name",
    "password_hash",
    "plan",
    "role",
    "pref_announcements",
    "pref_usage_analytics",
    "email_verified_at",
    "suspended_at",
    "created_at",
    "updated_at",
}


def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        assert pending_model_changes(engine) == []
    finally:
        engine.dispose()


def test_account_table_holds_only_the_documented_personal_data(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        columns = {column["name"] for column in inspect(engine).get_columns("accounts")}
    finally:
        engine.dispose()
    assert columns == ACCOUNT_COLUMNS

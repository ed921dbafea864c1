"""The database schema as a whole: every table in one metadata, and the Alembic migrations."""

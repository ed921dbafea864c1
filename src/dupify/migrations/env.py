"""Alembic environment: runs migrations on the connection `dupify.schema.migrate` hands it."""

from alembic import context

from dupify.schema.tables import Base

target_metadata = Base.metadata
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

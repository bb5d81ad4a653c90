"""Alembic's environment for the notifier's tables (schema ``milestones_notify``).

Two ways in:

- **The services** (``services.notify.store.migrate``) render the upgrade as SQL (offline mode)
  and run it on their own asyncpg connection, inside the transaction that holds the advisory
  lock: they set ``config.attributes["in_transaction"]``, so no ``BEGIN``/``COMMIT`` is written.
- **The ``alembic`` command line** (developers, operators who want Alembic's own view):
  ``alembic -c services/notify/migrations/alembic.ini -x dsn=postgresql://… upgrade head``
  runs online through an ``AsyncEngine`` (asyncpg; ``connection.run_sync``), as Alembic's async
  template does; ``--sql`` prints the same SQL the services run.

Every migration is plain SQL (``op.execute``), one statement each, so both ways run the same text.
"""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from projections.db import NOTIFY_SCHEMA, lock_key

VERSION_TABLE = "alembic_version"
LOCK = lock_key("notifier-schema")  # the services take the same one
# asyncpg's dialect renders SQL as PostgreSQL takes it ($n parameters, a % stays a %)
DIALECT_URL = "postgresql+asyncpg://"

config = context.config


def run_migrations_offline() -> None:
    context.configure(
        url=DIALECT_URL,
        literal_binds=True,
        version_table_schema=NOTIFY_SCHEMA,
        version_table=VERSION_TABLE,
        # the services run the text inside their own transaction (it holds the lock)
        transactional_ddl=not config.attributes.get("in_transaction", False),
    )
    with context.begin_transaction():
        # the version table lives in the schema, so the schema comes first
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {NOTIFY_SCHEMA}")
        context.run_migrations()


def run_with(connection: Connection) -> None:
    connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {NOTIFY_SCHEMA}")
    context.configure(
        connection=connection, version_table_schema=NOTIFY_SCHEMA, version_table=VERSION_TABLE
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online(dsn: str) -> None:
    # the DSN goes to asyncpg as it is (libpq form, sockets, sslmode): no URL translation
    engine = create_async_engine(
        DIALECT_URL, async_creator=lambda: asyncpg.connect(dsn), poolclass=pool.NullPool
    )
    try:
        async with engine.begin() as connection:
            # one migration at a time, whoever runs it
            await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK})")
            await connection.run_sync(run_with)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    dsn = context.get_x_argument(as_dictionary=True).get("dsn") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not dsn:
        raise SystemExit("no database: pass -x dsn=postgresql://… (or set sqlalchemy.url)")
    asyncio.run(run_migrations_online(dsn))

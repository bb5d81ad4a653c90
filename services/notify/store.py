"""The notifier's own tables (deliveries, attempts, notified health, digests): side effects, not
read models, so they are never rebuilt from the log and never dropped with the read models.

They live in schema ``milestones_notify`` (``projections.db.NOTIFY_SCHEMA``; every connection
has it on its search path after ``milestones``) and change only through the Alembic migrations
in ``migrations/versions``. Each service runs ``ensure_schema`` at start; an operator can run
``milestones migrate`` (``--sql`` prints what it would run).

How the services migrate, from inside their running event loop: Alembic renders the upgrade from
the database's revision to the head as SQL (its offline mode; the migrations are plain SQL, one
statement each, so nothing needs a live connection to render), and the SQL runs on the caller's
own asyncpg connection, in the one transaction that holds the advisory lock and read the
revision. Chosen over the async template's ``AsyncEngine`` + ``run_sync`` because the lock, the
revision read and the DDL must share a connection and a transaction (so concurrent starts are
serialised and the second finds nothing to do), the caller has a connection but no DSN, and
SQLAlchemy's asyncpg dialect would install its own ``jsonb`` codec on a connection it wraps.
Only the rendering runs in a worker thread (~0.3 s the first time in a process, importing the
dialect; ~2 ms after), one at a time: Alembic keeps its context in module globals.
"""

from __future__ import annotations

import asyncio
import functools
import io
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from events.errors import StartupError
from projections.db import NOTIFY_SCHEMA, SCHEMA, Conn, lock_key

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = f"{NOTIFY_SCHEMA}.alembic_version"
OWN_TABLES = ("deliveries", "delivery_attempts", "notified_health", "digests")
LOCK = "notifier-schema"  # the key builds before migrations took too: old and new serialise


def alembic_config(output: io.StringIO | None = None) -> Config:
    """The configuration the services use (no ini file: ``migrations/alembic.ini`` is for the
    ``alembic`` command line)."""
    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "services/notify/migrations/versions holds no migration"
    return head


@functools.cache
def upgrade_sql(current: str | None) -> str:
    """The SQL that takes the notifier's tables from ``current`` (``None``: nothing yet) to the
    head, without ``BEGIN``/``COMMIT`` (the caller's transaction holds the lock)."""
    output = io.StringIO()
    config = alembic_config(output)
    config.attributes["in_transaction"] = True
    with _RENDERING:
        command.upgrade(config, f"{current}:head" if current else "head", sql=True)
    return output.getvalue()


_RENDERING = threading.Lock()


async def current_revision(conn: Conn) -> str | None:
    if await conn.fetchval("SELECT to_regclass($1)", VERSION_TABLE) is None:
        return None
    found = [r["version_num"] for r in await conn.fetch(f"SELECT version_num FROM {VERSION_TABLE}")]
    if len(found) > 1:
        raise StartupError(
            f"{VERSION_TABLE} holds several revisions ({', '.join(sorted(found))}): "
            "the notifier's migrations have one line of history; keep the newest row"
        )
    return found[0] if found else None


async def migrate(conn: Conn) -> tuple[str | None, str]:
    """Bring the notifier's tables to the head revision (adopting the tables of builds before
    migrations); safe to run twice and from several processes at once. Returns (the revision
    found, the head)."""
    head = head_revision()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(LOCK))
        found = await current_revision(conn)
        if found != head:
            sql = await _render(found, head)
            if found is None:  # empty after `alembic downgrade base`; rendered SQL creates it
                await conn.execute(f"DROP TABLE IF EXISTS {VERSION_TABLE}")
            await conn.execute(sql)
        await refuse_tables_in_read_model_schema(conn)
    return found, head


async def pending_sql(conn: Conn) -> str:
    """What ``migrate`` would run now (empty at the head): ``milestones migrate --sql``."""
    head = head_revision()
    found = await current_revision(conn)
    return "" if found == head else await _render(found, head)


async def _render(found: str | None, head: str) -> str:
    try:
        return await asyncio.to_thread(upgrade_sql, found)
    except CommandError as exc:
        raise StartupError(
            f"the notifier's tables ({NOTIFY_SCHEMA}) are at migration {found}, which this "
            f"build does not know (its newest is {head}): a newer build migrated them; run "
            "that build or a later one"
        ) from exc


async def ensure_schema(conn: Conn) -> None:
    """At every start of a service that uses the notifier's tables (query, notifier, dev)."""
    await migrate(conn)


async def refuse_tables_in_read_model_schema(conn: Conn) -> None:
    """A notifier table left in ``milestones`` (a build before migrations started after the
    upgrade and made an empty one) comes first on the search path and would hide the real one:
    refuse rather than write to the wrong table."""
    strays = await conn.fetchval(
        "SELECT string_agg(tablename, ', ' ORDER BY tablename) FROM pg_tables "
        "WHERE schemaname = $1 AND tablename = ANY($2::text[])",
        SCHEMA,
        list(OWN_TABLES),
    )
    if strays:
        raise StartupError(
            f"schema {SCHEMA} holds notifier tables ({strays}) besides {NOTIFY_SCHEMA}: a build "
            "older than the notifier's migrations made them after the upgrade; stop it, copy "
            f"what you need into {NOTIFY_SCHEMA} and drop them from {SCHEMA}"
        )

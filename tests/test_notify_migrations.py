"""The notifier's own tables evolve without loss (issue 14, point 8).

Deliveries, attempts, notified health and digests are side effects, not rebuildable from the
log: they live in schema ``milestones_notify``, versioned by Alembic, and survive the read
models' upgrade path (``DROP SCHEMA milestones CASCADE``). Against a real PostgreSQL: a database
made by the build before migrations (``tests/data/notify_schema_v0.sql``, the old
``services/notify/schema.sql``) is adopted with every row; a fresh one gets the head; twice and
concurrently is safe.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import msgspec
import pytest
from alembic.script import ScriptDirectory

from events.errors import StartupError
from projections import PROJECTIONS
from projections import db as read_db
from projections.db import NOTIFY_SCHEMA, SCHEMA, connect
from services.notify import store
from tests.conftest import MemoryAuthenticator, http_client
from tests.test_cli import run

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS_SCHEMA_SQL = (ROOT / "tests/data/notify_schema_v0.sql").read_text()
# columns migrations added to the previous build's tables (0002): a migration adding one adds it
NEW_COLUMNS = {"content_type", "traceparent"}
# indexes migrations added (0003)
NEW_INDEXES = {"deliveries_failed"}


async def made_by_the_previous_build(db_url: str) -> None:
    """What the build before migrations left: its schema.sql run in ``milestones``, and rows."""
    conn = await connect(db_url, SCHEMA)
    try:
        await conn.execute(PREVIOUS_SCHEMA_SQL)
        await conn.execute(
            "INSERT INTO deliveries (id, kind, project_id, milestone_id, stakeholder, url, "
            "secret, position, body, status, attempts, last_status, last_error, delivered_at) "
            "VALUES ('d1', 'milestone.achieved', 'apollo', 'm1', 'ops', 'https://h.test/a', "
            "'sealed:v1:abc', 7, '\\x00017b7d'::bytea, 'pending', 1, 503, 'busy', NULL), "
            "('d2', 'project.digest', 'apollo', NULL, 'pm', 'https://h.test/b', NULL, NULL, "
            "'\\x7b7d'::bytea, 'failed', 8, 500, 'HTTP 500', NULL)"
        )
        await conn.execute(
            "INSERT INTO delivery_attempts VALUES "
            "('d1', 1, '2026-11-30T09:00:00Z', 503, 'busy', 12.5), "
            "('d2', 1, '2026-11-30T10:00:00Z', 500, 'HTTP 500', 3.25)"
        )
        await conn.execute(
            "INSERT INTO notified_health VALUES ('apollo', 'm1', 'at_risk', '2026-12-01')"
        )
        await conn.execute(
            "INSERT INTO digests VALUES ('apollo', 9, '2026-11-30T08:00:00Z', $1)",
            {"late": ["m1"], "since": 3},
        )
    finally:
        await conn.close()


async def rows(conn: asyncpg.Connection, schema: str) -> dict[str, list[dict]]:
    """Every row of the four tables, as JSON objects, without the columns 0002 added."""
    found = {}
    for table in store.OWN_TABLES:
        listed = await conn.fetch(f"SELECT to_jsonb(t) AS r FROM {schema}.{table} t ORDER BY 1")
        found[table] = [{k: v for k, v in r["r"].items() if k not in NEW_COLUMNS} for r in listed]
    return found


async def shape(conn: asyncpg.Connection, schema: str) -> dict[str, list[tuple]]:
    """Columns, indexes and constraints of the four tables, with the schema name taken out."""
    columns = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = $1 AND table_name = ANY($2) "
        "ORDER BY 1, 2",
        schema,
        list(store.OWN_TABLES),
    )
    indexes = await conn.fetch(
        "SELECT tablename, indexname, replace(indexdef, $1 || '.', '') FROM pg_indexes "
        "WHERE schemaname = $1 AND tablename = ANY($2) ORDER BY 1, 2",
        schema,
        list(store.OWN_TABLES),
    )
    constraints = await conn.fetch(
        "SELECT c.relname, k.conname, replace(pg_get_constraintdef(k.oid), $1 || '.', '') "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "WHERE k.connamespace = $1::regnamespace AND c.relname = ANY($2) ORDER BY 1, 2",
        schema,
        list(store.OWN_TABLES),
    )
    return {
        "columns": [tuple(r) for r in columns],
        "indexes": [tuple(r) for r in indexes],
        "constraints": [tuple(r) for r in constraints],
    }


async def previous_build_shape(db_url: str) -> dict[str, list[tuple]]:
    """The old schema.sql run in a scratch schema: what the tables looked like before."""
    scratch = await connect(db_url, "v0_shape")
    try:
        await scratch.execute("CREATE SCHEMA v0_shape")
        await scratch.execute(PREVIOUS_SCHEMA_SQL)
        return await shape(scratch, "v0_shape")
    finally:
        await scratch.execute("DROP SCHEMA v0_shape CASCADE")
        await scratch.close()


def without_new_columns(found: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    def new(name: str) -> bool:
        return any(column in name for column in NEW_COLUMNS)

    return {
        "columns": [c for c in found["columns"] if not new(c[1])],
        "indexes": [i for i in found["indexes"] if i[1] not in NEW_INDEXES],
        "constraints": [c for c in found["constraints"] if not new(c[1])],  # PG 18: NOT NULLs
    }


async def test_a_database_made_by_the_previous_build_is_adopted_with_every_row(db_url):
    await made_by_the_previous_build(db_url)
    conn = await connect(db_url)
    try:
        before = await rows(conn, SCHEMA)
        assert all(before.values()), before
        assert await store.migrate(conn) == (None, store.head_revision())
        assert await rows(conn, NOTIFY_SCHEMA) == before
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = ANY($2)",
                SCHEMA,
                list(store.OWN_TABLES),
            )
            == 0
        )  # moved, not copied
        # indexes, keys and the foreign key moved with the tables
        assert without_new_columns(await shape(conn, NOTIFY_SCHEMA)) == (
            await previous_build_shape(db_url)
        )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO delivery_attempts VALUES ('nope', 1, now(), 200, NULL, 1)"
            )
        # 0002: old rows were sent as JSON and carry no trace
        added = await conn.fetch("SELECT content_type, traceparent FROM deliveries")
        assert {tuple(r) for r in added} == {("application/json", None)}
        # the notifier's unqualified SQL finds them through the search path
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 2
    finally:
        await conn.close()


async def test_a_fresh_database_gets_the_head_with_the_previous_builds_tables_plus_0002(db_url):
    conn = await connect(db_url)
    try:
        assert await store.migrate(conn) == (None, store.head_revision())
        assert await store.current_revision(conn) == store.head_revision()
        fresh = await shape(conn, NOTIFY_SCHEMA)
        assert {c[1] for c in fresh["columns"] if c[0] == "deliveries"} >= NEW_COLUMNS
        assert {i[1] for i in fresh["indexes"]} >= NEW_INDEXES
        assert without_new_columns(fresh) == await previous_build_shape(db_url)
    finally:
        await conn.close()


async def test_migrating_again_changes_nothing(db_url):
    await made_by_the_previous_build(db_url)
    conn = await connect(db_url)
    try:
        await store.migrate(conn)
        kept = await rows(conn, NOTIFY_SCHEMA)
        assert await store.migrate(conn) == (store.head_revision(), store.head_revision())
        await store.ensure_schema(conn)  # what the wiring calls
        assert await rows(conn, NOTIFY_SCHEMA) == kept
        assert await store.pending_sql(conn) == ""
    finally:
        await conn.close()


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "previous-build"])
async def test_concurrent_starts_migrate_once(db_url, previous):
    if previous:
        await made_by_the_previous_build(db_url)
    conns = [await connect(db_url) for _ in range(4)]
    try:
        before = await rows(conns[0], SCHEMA) if previous else None
        results = await asyncio.gather(*(store.migrate(c) for c in conns))
        head = store.head_revision()
        # one start migrated, the others waited for the lock and found the head
        assert sorted(results, key=lambda r: r[0] or "") == [(None, head)] + [(head, head)] * 3
        assert await conns[1].fetchval("SELECT count(*) FROM milestones_notify.alembic_version")
        if previous:
            assert await rows(conns[2], NOTIFY_SCHEMA) == before
    finally:
        for conn in conns:
            await conn.close()


async def test_the_read_models_upgrade_path_leaves_the_notifier_rows_alone(db_url):
    await made_by_the_previous_build(db_url)
    conn = await connect(db_url)
    try:
        await store.migrate(conn)
        kept = await rows(conn, NOTIFY_SCHEMA)
        # the README's upgrade path for read models, then the services start again
        await conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await read_db.ensure_schema(db_url, list(PROJECTIONS.values()))
        assert await store.migrate(conn) == (store.head_revision(), store.head_revision())
        assert await rows(conn, NOTIFY_SCHEMA) == kept
        assert await conn.fetchval("SELECT count(*) FROM ms_status") == 0  # rebuilt empty
    finally:
        await conn.close()


async def test_a_notifier_table_left_in_the_read_model_schema_is_refused_with_one_line(db_url):
    conn = await connect(db_url)
    try:
        await store.migrate(conn)
        # an older build started after the upgrade: its table would shadow the real one
        await conn.execute(f"CREATE TABLE {SCHEMA}.deliveries (id text)")
        with pytest.raises(StartupError) as refused:
            await store.migrate(conn)
        assert "schema milestones holds notifier tables (deliveries)" in str(refused.value)
        assert "\n" not in str(refused.value)
    finally:
        await conn.close()


async def test_tables_migrated_by_a_newer_build_are_refused_with_one_line(db_url):
    conn = await connect(db_url)
    try:
        await store.migrate(conn)
        await conn.execute("UPDATE milestones_notify.alembic_version SET version_num = '0099'")
        with pytest.raises(StartupError) as refused:
            await store.migrate(conn)
        assert str(refused.value).startswith(
            "the notifier's tables (milestones_notify) are at migration 0099, which this build "
            "does not know"
        )
    finally:
        await conn.close()


def test_the_revision_graph_is_one_line_with_one_head() -> None:
    script = ScriptDirectory.from_config(store.alembic_config())
    assert script.get_heads() == [store.head_revision()]
    chain = list(reversed(list(script.walk_revisions())))
    assert chain[0].revision == "0001" and chain[0].down_revision is None
    for before, after in zip(chain, chain[1:], strict=False):
        assert after.down_revision == before.revision, f"{after.revision} does not follow"
    assert chain[-1].revision == store.head_revision()
    for revision in script.walk_revisions():
        assert revision.doc, f"migration {revision.revision} says nothing about what it does"
        assert Path(revision.path).name.startswith(f"v{revision.revision}_")
    rendered = store.upgrade_sql(None)
    # the services run it inside their own transaction (which holds the lock)
    assert not {"BEGIN;", "COMMIT;"} & set(rendered.splitlines()), rendered


async def test_the_query_service_lists_the_previous_builds_deliveries(db_url, settings):
    """The wiring's start migrates; ``GET /deliveries`` and a retry work on the adopted rows."""
    from services.app.wiring import running

    await made_by_the_previous_build(db_url)
    full = msgspec.structs.replace(settings, database_url=db_url)
    async with (
        running(full, intake=True, query=True) as system,
        http_client(system, MemoryAuthenticator()) as (api, _app),
    ):
        listed = (await api.get("/deliveries", params={"project_id": "apollo"})).json()["data"]
        assert [d["id"] for d in listed] == ["d1", "d2"]
        assert [a["status"] for a in listed[0]["attempt_log"]] == [503]
        assert (await api.post("/deliveries/d2/retry")).status_code == 200  # failed: again
    conn = await connect(db_url)
    try:
        assert await conn.fetchval("SELECT status FROM deliveries WHERE id = 'd2'") == "pending"
    finally:
        await conn.close()


async def test_milestones_migrate_prints_its_sql_then_migrates(db_url):
    head = store.head_revision()
    await made_by_the_previous_build(db_url)
    code, out, err = await run("migrate", "--database-url", db_url, "--sql")
    assert code == 0, err
    assert "ALTER TABLE milestones.deliveries SET SCHEMA milestones_notify" in out
    assert "ADD COLUMN content_type" in out
    conn = await connect(db_url)
    try:
        assert await store.current_revision(conn) is None  # --sql ran nothing
        code, out, err = await run("migrate", "--database-url", db_url)
        assert (code, out.strip()) == (
            0,
            f"notifier tables (milestones_notify): migrated from nothing to {head}",
        ), err
        assert await store.current_revision(conn) == head
        assert len((await rows(conn, NOTIFY_SCHEMA))["deliveries"]) == 2
        code, out, _ = await run("migrate", "--database-url", db_url)
        assert out.strip().endswith(f"at migration {head}, nothing to do")
    finally:
        await conn.close()


async def alembic(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        "-c",
        str(ROOT / "services/notify/migrations/alembic.ini"),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_the_alembic_command_line_upgrades_and_downgrades_without_loss(db_url):
    """Online through an AsyncEngine (Alembic's async template), and back to the previous
    build's layout; the services adopt it again."""
    head = store.head_revision()
    await made_by_the_previous_build(db_url)
    conn = await connect(db_url)
    try:
        before = await rows(conn, SCHEMA)
        code, out = await alembic("-x", f"dsn={db_url}", "upgrade", "head")
        assert code == 0, out
        assert await store.current_revision(conn) == head
        assert await rows(conn, NOTIFY_SCHEMA) == before
        code, out = await alembic("-x", f"dsn={db_url}", "downgrade", "base")
        assert code == 0, out
        assert await rows(conn, SCHEMA) == before  # where the previous build looks
        assert await store.migrate(conn) == (None, head)
        assert await rows(conn, NOTIFY_SCHEMA) == before
    finally:
        await conn.close()

"""The read side's promises, each against real servers and, where it matters, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import events
from events import ENCODER, decode_stored
from projections import PROJECTIONS
from projections.db import connect, ensure_schema
from projections.rebuild import build_indexes, rebuild, replay_parked
from projections.runner import Runner, groups
from projections.status import COLUMNS, fold, from_db
from services.eventlog.log import EventLog
from tests.conftest import caught_up, cli_env, cloudevent, plan_project, request, wait_for

TABLES = {
    "status": ("ms_status", "project_id, milestone_id"),
    "history": ("ms_history", "position"),
    "audit": ("audit_events", "position"),
}


async def table_rows(db_url: str, name: str) -> list[tuple]:
    table, order = TABLES[name]
    conn = await connect(db_url)
    try:
        return [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")]
    finally:
        await conn.close()


async def status_fold_matches(db_url: str, nc) -> None:
    conn = await connect(db_url)
    try:
        rows = {
            (r["project_id"], r["milestone_id"]): from_db(r)
            for r in await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM ms_status")
        }
    finally:
        await conn.close()
    stored = [
        (m.seq, decode_stored(m.data))
        for m in await EventLog(nc).read_subject("milestones.events.>")
    ]
    assert rows == fold(stored)


async def load(nc, projects: int, milestones: int = 5, tasks: int = 8, prefix: str = "p") -> int:
    """A workload: projects with milestones and tasks, half the tasks completed, some
    reschedules."""
    last = 0
    for n in range(projects):
        p = f"{prefix}{n}"
        batch = [cloudevent("ProjectCreated", {"project_id": p, "name": p})]
        for m in range(milestones):
            batch += plan_project(p, f"m{m}", tasks=tuple(f"t{t}" for t in range(tasks)))[1:]
        reply = await request(nc, batch)
        assert reply.accepted, reply
        batch = []
        for m in range(milestones):
            batch += [
                cloudevent(
                    "TaskCompleted", {"project_id": p, "milestone_id": f"m{m}", "task_id": f"t{t}"}
                )
                for t in range(0, tasks, 2)
            ]
            batch.append(
                cloudevent(
                    "MilestoneRescheduled",
                    {
                        "project_id": p,
                        "milestone_id": f"m{m}",
                        "new_due": "2027-03-01",
                        "reason": "load",
                    },
                )
            )
        reply = await request(nc, batch)
        assert reply.accepted, reply
        last = reply.events[-1].position
    return last


def projections_process(settings, db_url: str) -> asyncio.Future:
    env = {
        **os.environ,
        **cli_env(settings),
        "MILESTONES_DATABASE_URL": db_url,
        "MILESTONES_LOG_FORMAT": "json",
    }
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "serve",
        "projections",
        "--no-http",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def position_of(db_url: str, name: str) -> int:
    conn = await connect(db_url)
    try:
        return await conn.fetchval("SELECT position FROM checkpoints WHERE projection = $1", name)
    finally:
        await conn.close()


# Holds a projection's second batch open, between its row writes and its commit: the test's
# session owns the advisory lock the trigger waits for (a test-only trigger, dropped again).
HOLD_KEY = 424242
HOLD_SECOND_BATCH = f"""
CREATE FUNCTION milestones.hold_second_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.position > 0 THEN PERFORM pg_advisory_xact_lock({HOLD_KEY}); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold_second_batch BEFORE UPDATE OF position ON milestones.checkpoints
    FOR EACH ROW EXECUTE FUNCTION milestones.hold_second_batch();
"""


async def test_a_runner_killed_mid_batch_resumes_exactly(intake, nc, settings, db_url):
    last = await load(nc, projects=30)
    await ensure_schema(db_url, list(PROJECTIONS.values()))
    holder = await connect(db_url)
    try:
        await holder.execute(HOLD_SECOND_BATCH)
        await holder.execute("SELECT pg_advisory_lock($1)", HOLD_KEY)
        proc = await projections_process(settings, db_url)
        try:

            async def held() -> bool:  # a batch's rows are written, its commit waits
                return bool(
                    await holder.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND objid = $1 AND NOT granted",
                        HOLD_KEY,
                    )
                )

            await wait_for(held, timeout=60, what="a runner's second batch to wait on its commit")
            proc.send_signal(signal.SIGKILL)  # a real kill, in the middle of a transaction
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
        await holder.execute(
            "DROP TRIGGER hold_second_batch ON milestones.checkpoints;"
            " DROP FUNCTION milestones.hold_second_batch();"
            f" SELECT pg_advisory_unlock({HOLD_KEY})"
        )
    finally:
        await holder.close()
    killed_at = {n: await position_of(db_url, n) for n in TABLES}
    assert min(killed_at.values()) < last, killed_at
    proc = await projections_process(settings, db_url)
    try:
        await caught_up(db_url, last)
    finally:
        proc.terminate()
        assert await proc.wait() == 0
    live = {n: await table_rows(db_url, n) for n in TABLES}
    await status_fold_matches(db_url, nc)
    for name in TABLES:
        await rebuild(PROJECTIONS[name], db_url, nc)
        assert await table_rows(db_url, name) == live[name], f"{name} differs from a rebuild"


async def test_one_reader_feeds_every_read_model_each_from_its_own_checkpoint(intake, nc, db_url):
    """The live service reads the log once for status, history and audit; each keeps its own
    checkpoint. Here history was rebuilt ahead of the others: the reader starts after the lowest
    checkpoint, and history skips what it already holds (a row applied twice would differ from a
    rebuild)."""
    first = await load(nc, projects=4)
    await ensure_schema(db_url, list(PROJECTIONS.values()))
    await rebuild(PROJECTIONS["history"], db_url, nc)
    assert await position_of(db_url, "history") == first
    assert not await position_of(db_url, "status")
    last = await load(nc, projects=3, prefix="q")
    stop = asyncio.Event()
    runner = Runner([PROJECTIONS[n] for n in TABLES], db_url, nc, batch_size=50)
    assert [lane.checkpoint for lane in runner.lanes] == list(TABLES)
    task = asyncio.create_task(runner.run(stop))
    try:
        await caught_up(db_url, last)
    finally:
        stop.set()
        await task
    assert runner.state.restarts == 0, runner.state.last_error
    live = {n: await table_rows(db_url, n) for n in TABLES}
    await status_fold_matches(db_url, nc)
    for name in TABLES:
        await rebuild(PROJECTIONS[name], db_url, nc)
        assert await table_rows(db_url, name) == live[name], f"{name} differs from a rebuild"


@contextlib.asynccontextmanager
async def running_with_a_table_held(nc, db_url: str, table: str, **options):
    """A runner of status, history and audit started while another transaction holds ``table``
    (``LOCK … IN EXCLUSIVE MODE``: reads pass, writes wait); yields its release. On exit
    the table is released, the runner stopped, and it must not have restarted."""
    holder = await connect(db_url)
    stop = asyncio.Event()
    runner = Runner([PROJECTIONS[n] for n in TABLES], db_url, nc, **options)
    holding = holder.transaction()
    await holding.start()
    await holder.execute(f"LOCK TABLE milestones.{table} IN EXCLUSIVE MODE")
    task = asyncio.create_task(runner.run(stop))
    try:
        yield holding.rollback
    finally:
        stop.set()
        with contextlib.suppress(Exception):  # (released already)
            await holding.rollback()
        await task
        await holder.close()
    assert runner.state.restarts == 0, runner.state.last_error


async def test_the_read_models_of_one_reader_apply_a_batch_at_once(intake, nc, db_url):
    """Each read model applies a batch on a connection of its own, at once: with status's table
    held by another transaction, history and audit still commit the batch (applied in turn,
    they waited behind status, the first lane); released, all catch up, nothing restarted."""
    await ensure_schema(db_url, list(PROJECTIONS.values()))
    last = await load(nc, projects=2)
    async with running_with_a_table_held(nc, db_url, "ms_status") as release:

        async def others_applied() -> bool:  # the first batch, at least (no row for status)
            return all([await position_of(db_url, n) for n in ("history", "audit")])

        await wait_for(others_applied, 30, "history and audit to commit past a held status")
        assert not await position_of(db_url, "status")  # held: in turn, nothing had committed
        await release()
        await caught_up(db_url, last)


async def test_status_runs_batches_ahead_of_a_slower_read_model(intake, nc, db_url):
    """Each lane goes at its own pace, up to ``LANE_BACKLOG`` batches behind the read: with
    history's table held, status applies batch after batch (in lockstep it would stop at the
    end of the first), and history catches up once released."""
    from projections.runner import LANE_BACKLOG

    await ensure_schema(db_url, list(PROJECTIONS.values()))
    last = await load(nc, projects=2)
    batch = 40
    assert last > batch * (LANE_BACKLOG + 2)
    async with running_with_a_table_held(nc, db_url, "ms_history", batch_size=batch) as release:

        async def status_ahead() -> bool:  # past its first batch while history holds none
            return (await position_of(db_url, "status") or 0) > batch

        await wait_for(status_ahead, 30, "status to apply several batches past a held history")
        assert not await position_of(db_url, "history")
        await release()
        await caught_up(db_url, last)


async def test_a_rebuild_of_all_decodes_for_each_read_model_as_it_would_alone(intake, nc, db_url):
    """Read models rebuilt together share one read, but each decodes as it does alone: the
    audit trail keeps a publisher's extension attributes."""
    for ce in plan_project("x", "m"):
        assert (await request(nc, ce)).accepted
    task = cloudevent(
        "TaskCompleted", {"project_id": "x", "milestone_id": "m", "task_id": "t1"}, ticket="T-42"
    )
    reply = await request(nc, task)
    assert reply.accepted, reply
    await ensure_schema(db_url, list(PROJECTIONS.values()))
    await rebuild([PROJECTIONS[n] for n in TABLES], db_url, nc)
    conn = await connect(db_url)
    try:
        stored = await conn.fetchval(
            "SELECT attributes FROM audit_events WHERE position = $1", reply.events[0].position
        )
    finally:
        await conn.close()
    assert stored == {"ticket": "T-42"}


async def indexes_of(db_url: str, tables: tuple[str, ...]) -> set[tuple[str, str]]:
    conn = await connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT tablename, indexdef FROM pg_indexes "
            "WHERE schemaname = 'milestones' AND tablename = ANY($1::text[])",
            list(tables),
        )
    finally:
        await conn.close()
    return {(r["tablename"], r["indexdef"]) for r in rows}


async def test_a_rebuild_builds_the_secondary_indexes_after_the_load(intake, nc, db_url):
    """A rebuild creates its tables bare, loads them, and only then their secondary indexes: the
    tables it swaps in carry every index the live tables had, together or alone."""
    await load(nc, projects=2)
    models = [PROJECTIONS[n] for n in TABLES]
    await ensure_schema(db_url, models)
    tables = tuple(t for p in models for t in p.tables)
    made = await indexes_of(db_url, tables)
    assert any("audit_principal" in d for _, d in made)  # a secondary index, not only keys
    await rebuild(models, db_url, nc)
    assert await indexes_of(db_url, tables) == made
    await rebuild(PROJECTIONS["audit"], db_url, nc)
    assert await indexes_of(db_url, tables) == made


async def test_the_index_builds_take_the_next_statement_on_whichever_connection_is_free(db_url):
    """A rebuild's index builds share one queue: while one connection's build is held up, the
    other goes on with every statement after it (split every other statement, ``b`` would wait
    behind the held one)."""
    key, schema = 7_100_001, "milestones_test_index_queue"
    holder, conn = await connect(db_url), await connect(db_url)
    build = None
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        sql = (
            f"SELECT pg_advisory_lock({key});\n"  # the first statement, on ``conn``: held
            f"CREATE TABLE {schema}.a ();\nCREATE TABLE {schema}.b ();\nCREATE TABLE {schema}.c ()"
        )
        build = asyncio.ensure_future(build_indexes(conn, db_url, schema, sql))

        async def all_made() -> bool:
            made = "SELECT count(*) FROM pg_tables WHERE schemaname = $1"
            return await holder.fetchval(made, schema) == 3

        await wait_for(all_made, 15, "every statement after the held one")
        assert not build.done()  # the held statement is still waiting
        await holder.execute("SELECT pg_advisory_unlock($1)", key)
        await build
    finally:
        if build is not None and not build.done():
            build.cancel()
        await holder.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await holder.close()
        await conn.close()


async def reloptions(conn, schema: str, tables: tuple[str, ...]) -> dict[str, list[str] | None]:
    """Each table's storage parameters and its TOAST table's, if it has one (``name/toast``)."""
    rows = await conn.fetch(
        "SELECT c.relname, c.reloptions, t.reloptions AS toast FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid "
        "WHERE n.nspname = $1 AND c.relname = ANY($2::text[])",
        schema,
        list(tables),
    )
    out: dict[str, list[str] | None] = {}
    for r in rows:
        out[r["relname"]] = r["reloptions"]
        out[f"{r['relname']}/toast"] = r["toast"]
    return out


async def test_a_rebuild_loads_without_autovacuum_and_swaps_in_tables_that_have_it(
    intake, nc, db_url
):
    """While a rebuild fills its tables, autovacuum leaves them alone (it would compete with the
    load and hold up the index build and the swap); the tables it swaps in are vacuumed as any
    others. The swap is held back (the test holds the live checkpoint rows) to look in between."""
    await load(nc, projects=2)
    models = [PROJECTIONS[n] for n in TABLES]
    await ensure_schema(db_url, models)
    tables = tuple(t for p in models for t in p.tables)
    shadow = "milestones_next_" + "_".join(p.name for p in models)
    off = ["autovacuum_enabled=false"]
    holder, reader = await connect(db_url), await connect(db_url)
    rebuilt = None
    try:
        async with holder.transaction():
            for p in models:
                await holder.execute(
                    "INSERT INTO milestones.checkpoints (projection) VALUES ($1) "
                    "ON CONFLICT DO NOTHING",
                    p.name,
                )
                await holder.execute(
                    "SELECT 1 FROM milestones.checkpoints WHERE projection = $1 FOR UPDATE", p.name
                )
            rebuilt = asyncio.ensure_future(rebuild(models, db_url, nc))

            async def loaded_without_autovacuum() -> bool:
                seen = await reloptions(reader, shadow, tables)
                return len(seen) == 2 * len(tables) and all(
                    v == off for k, v in seen.items() if not k.endswith("/toast")
                )

            await wait_for(loaded_without_autovacuum, 30, "the shadow tables without autovacuum")
            # the payloads' TOAST table too
            assert (await reloptions(reader, shadow, tables))["audit_events/toast"] == off
            assert not rebuilt.done()  # held at the swap
        await rebuilt
        live = await reloptions(reader, "milestones", tables)
        assert len(live) == 2 * len(tables) and all(v is None for v in live.values()), live
    finally:
        if rebuilt is not None and not rebuilt.done():
            rebuilt.cancel()
        await holder.close()
        await reader.close()


async def test_a_standby_takes_over_from_the_checkpoint(intake, nc, settings, db_url):
    first_load = await load(nc, projects=3)
    active = await projections_process(settings, db_url)
    standby = None
    try:
        await caught_up(db_url, first_load)
        standby = await projections_process(settings, db_url)
        conn = await connect(db_url)
        try:

            async def waiting() -> bool:  # each of the standby's runners (one per stream read)
                # blocks on the advisory lock of its first read model
                return await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ) == len(groups(list(PROJECTIONS.values())))

            await wait_for(waiting, timeout=30, what="the standby to wait on the locks")
        finally:
            await conn.close()
        before = await position_of(db_url, "status")
        active.send_signal(signal.SIGKILL)
        await active.wait()
        second_load = await load(nc, projects=6, prefix="q")
        await caught_up(db_url, second_load)
        assert await position_of(db_url, "status") > before
    finally:
        for proc in (active, standby):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()
    await status_fold_matches(db_url, nc)
    assert len(await table_rows(db_url, "audit")) == len(
        await EventLog(nc).read_subject("milestones.events.>")
    )


async def test_a_poison_event_is_parked_with_its_project_behind_it_and_replayed_after_the_fix(
    intake, nc, db_url
):
    for ce in plan_project("p", "m") + plan_project("p", "m2")[1:] + plan_project("q", "m"):
        await request(nc, ce)
    # A newer writer (mid rolling deploy) stored TaskCompleted v2, which renamed task_id to task.
    poison = {
        "id": "v2-event",
        "source": "intake-v2",
        "type": "TaskCompleted",
        "subject": "milestones.events.p.m",
        "time": "2026-11-24T10:00:00Z",
        "recordedtime": "2026-11-24T10:00:00Z",
        "correlationid": "c",
        "causationid": "c",
        "schemaversion": 2,
        "data": {"type": "TaskCompleted", "project_id": "p", "milestone_id": "m", "task": "t1"},
    }
    ack = await nc.jetstream().publish("milestones.events.p.m", ENCODER.encode(poison))
    # This version's intake cannot fold that milestone any more, and says so; other milestones go
    # on.
    blocked = await request(
        nc, cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "t2"})
    )
    assert (
        blocked.error.code == "unavailable"
        and "schemaversion 2 has no upcaster" in blocked.error.message
    )
    behind = await request(
        nc, cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m2", "task_id": "t2"})
    )
    other = await request(
        nc, cloudevent("TaskCompleted", {"project_id": "q", "milestone_id": "m", "task_id": "t2"})
    )
    stop = asyncio.Event()
    runner = Runner(PROJECTIONS["status"], db_url, nc)
    task = asyncio.create_task(runner.run(stop))
    try:
        await caught_up(db_url, other.events[-1].position, ("status",))
        conn = await connect(db_url)
        parked = await conn.fetch(
            "SELECT position, error, behind, payload FROM parked_events "
            "WHERE projection = 'status' ORDER BY position"
        )
        tasks = {
            (r["project_id"], r["milestone_id"]): r["tasks"]
            for r in await conn.fetch("SELECT project_id, milestone_id, tasks FROM ms_status")
        }
        await conn.close()
        held = behind.events[-1].position
        assert [(r["position"], r["behind"]) for r in parked] == [(ack.seq, None), (held, ack.seq)]
        assert "schemaversion 2 has no upcaster" in parked[0]["error"]
        assert parked[1]["error"] == f"behind parked position {ack.seq}"
        assert parked[0]["payload"] == ENCODER.encode(poison)  # the raw bytes, as stored
        assert tasks[("q", "m")] == {"t1": False, "t2": True}  # other projects go on
        assert tasks[("p", "m2")] == {"t1": False, "t2": False}  # held behind the poison
        ready, why = runner.state.ready(time.monotonic())
        assert ready and runner.state.active and runner.state.restarts == 0, why
        events.UPCASTERS[("TaskCompleted", 2)] = lambda d: {
            **{k: v for k, v in d.items() if k != "task"},
            "task_id": d["task"],
        }
        try:
            assert await replay_parked(PROJECTIONS["status"], db_url) == (2, 0)
            live = await table_rows(db_url, "status")
            await rebuild(PROJECTIONS["status"], db_url, nc)
            assert await table_rows(db_url, "status") == live  # replayed in order == a rebuild
        finally:
            del events.UPCASTERS[("TaskCompleted", 2)]
        conn = await connect(db_url)
        assert await conn.fetchval(
            "SELECT tasks FROM ms_status WHERE project_id = 'p' AND milestone_id = 'm'"
        ) == {"t1": True, "t2": False}
        assert await conn.fetchval(
            "SELECT tasks FROM ms_status WHERE project_id = 'p' AND milestone_id = 'm2'"
        ) == {"t1": False, "t2": True}
        assert await conn.fetchval("SELECT count(*) FROM parked_events") == 0
        await conn.close()
    finally:
        stop.set()
        await task


async def test_rebuild_while_queries_run(system, api, nc, db_url):
    last = await load(nc, projects=4)
    await caught_up(db_url, last)
    expected = (await api.get("/projects/p1/milestones")).json()["data"]
    assert len(expected) == 5
    results, errors = [], []
    done = asyncio.Event()

    async def hammer() -> None:
        while not done.is_set():
            r = await api.get("/projects/p1/milestones")
            (results if r.status_code == 200 else errors).append(r)
            await asyncio.sleep(0)

    readers = [asyncio.create_task(hammer()) for _ in range(4)]
    for name in ("status", "audit", "history"):
        await rebuild(PROJECTIONS[name], db_url, nc)
    done.set()
    await asyncio.gather(*readers)
    assert not errors, [e.text for e in errors[:3]]
    assert len(results) > 10
    assert all(r.json()["data"] == expected for r in results)  # whole, equal answers throughout
    again = await load(
        nc, projects=5, prefix="r"
    )  # the live runners go on writing into the swapped-in tables
    await caught_up(db_url, again)
    await status_fold_matches(db_url, nc)


async def test_pagination_neither_skips_nor_repeats_while_events_arrive(system, api, nc, db_url):
    last = await load(nc, projects=3)
    await caught_up(db_url, last)
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            await request(
                nc,
                cloudevent(
                    "StatusReported", {"project_id": "p0", "health": "on_track", "note": f"n{i}"}
                ),
            )
            await request(
                nc,
                cloudevent(
                    "TaskCompleted",
                    {"project_id": "p1", "milestone_id": f"m{i % 5}", "task_id": "t1"},
                ),
            )
            i += 1

    background = asyncio.create_task(writer())
    seen_audit, seen_milestones = [], []
    cursor = None
    while True:
        page = (
            await api.get("/audit", params={"limit": 7, **({"cursor": cursor} if cursor else {})})
        ).json()
        seen_audit += [row["position"] for row in page["data"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    cursor = None
    while True:
        page = (
            await api.get(
                "/projects/p1/milestones",
                params={"limit": 2, **({"cursor": cursor} if cursor else {})},
            )
        ).json()
        seen_milestones += [row["milestone_id"] for row in page["data"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    stop.set()
    await background
    assert len(seen_audit) == len(set(seen_audit)) and seen_audit == sorted(seen_audit)
    conn = await connect(db_url)
    present = [
        r["position"]
        for r in await conn.fetch(
            "SELECT position FROM audit_events WHERE position <= $1 ORDER BY position",
            seen_audit[-1],
        )
    ]
    await conn.close()
    assert seen_audit == present  # nothing skipped up to the last page read
    assert seen_milestones == [f"m{i}" for i in range(5)]


# -- property: intake -> live read model == rebuilt read model == in-memory fold ----------------
IDS = st.sampled_from(["m1", "m2", "m3"])
TASKS = st.sampled_from(["a", "b", "c"])
DATES = st.dates(
    min_value=__import__("datetime").date(2026, 1, 1),
    max_value=__import__("datetime").date(2027, 12, 31),
)


def messages(project: str):
    def d(**kw):
        return {"project_id": project, **kw}

    return st.lists(
        st.one_of(
            st.builds(
                lambda m, k, due: (
                    "MilestonePlanned",
                    d(milestone_id=m, name=m, kind=k, due=due.isoformat()),
                ),
                IDS,
                st.sampled_from(["time", "event", "technical"]),
                DATES,
            ),
            st.builds(
                lambda m, t: ("TaskAdded", d(milestone_id=m, task_id=t, title=t)), IDS, TASKS
            ),
            st.builds(
                lambda m, t, r: (
                    "TaskCompleted",
                    d(milestone_id=m, task_id=t, **({"result": r} if r else {})),
                ),
                IDS,
                TASKS,
                st.sampled_from([None, "passed", "failed"]),
            ),
            st.builds(lambda m, t: ("TaskReopened", d(milestone_id=m, task_id=t)), IDS, TASKS),
            st.builds(
                lambda m, due: (
                    "MilestoneRescheduled",
                    d(milestone_id=m, new_due=due.isoformat(), reason="r"),
                ),
                IDS,
                DATES,
            ),
            st.builds(lambda m: ("MilestoneAchieved", d(milestone_id=m)), IDS),
            st.builds(lambda m: ("MilestoneCancelled", d(milestone_id=m, reason="r")), IDS),
        ),
        min_size=1,
        max_size=25,
    )


@hsettings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_live_equals_rebuilt_equals_fold(system, nc, db_url, data):
    project = f"prop{data.draw(st.integers(0, 10**9))}"
    await request(nc, cloudevent("ProjectCreated", {"project_id": project, "name": "prop"}))
    for type_, payload in data.draw(messages(project)):
        await request(nc, cloudevent(type_, payload))  # refusals are part of the game
    events = await EventLog(nc).read_subject("milestones.events.>")
    await caught_up(db_url, max(m.seq for m in events))
    await status_fold_matches(db_url, nc)
    three = ("status", "history", "audit")
    live = {name: await table_rows(db_url, name) for name in three}
    await rebuild([PROJECTIONS[name] for name in three], db_url, nc)  # together: one read
    for name in three:
        assert await table_rows(db_url, name) == live[name], name
    await rebuild(PROJECTIONS["history"], db_url, nc)  # alone
    assert await table_rows(db_url, "history") == live["history"]


async def test_a_read_model_schema_of_an_older_build_is_refused_with_one_line(db_url):
    from events.errors import StartupError
    from projections.db import SCHEMA_VERSION, ensure_schema

    conn = await connect(db_url)
    try:  # what version 2 made: parked payloads as text, no project, no behind
        await conn.execute(
            "DROP TABLE parked_events; CREATE TABLE parked_events (projection text, "
            "position bigint, subject text, type text, error text, payload text); "
            "UPDATE meta SET value = '2' WHERE key = 'schema_version'"
        )
    finally:
        await conn.close()
    try:
        await ensure_schema(db_url, list(PROJECTIONS.values()))
    except StartupError as exc:
        assert str(exc).startswith(
            f"database schema milestones is version 2, this build needs {SCHEMA_VERSION}"
        )
        assert "\n" not in str(exc)
    else:
        raise AssertionError("an old read-model schema was accepted")


async def test_a_rebuild_holding_few_status_rows_equals_the_fold_through_a_retried_batch(
    intake, nc, db_url, monkeypatch
):
    """A rebuild holds status rows in memory between batches (``projections.status.held``):
    with room for two rows, most rows are let go to the table and taken back again; and a batch
    whose transaction rolls back (audit fails on one event once: the batch is tried again) is
    applied once, not twice (a reschedule counted twice, a row in the table and held at once
    would show)."""
    from projections.status import held

    await load(nc, projects=3, milestones=3, tasks=4)
    stored = await EventLog(nc).read_subject("milestones.events.>")
    target = next(m.seq for m in stored if b'"MilestoneRescheduled"' in m.data)
    await ensure_schema(db_url, list(PROJECTIONS.values()))
    monkeypatch.setattr(held, "HELD_ROWS", 2)
    audit = PROJECTIONS["audit"]
    real_apply, failed = audit.apply, []

    async def flaky(conn, batch, schema):
        if len(failed) < 2 and any(p == target for p, _ in batch):
            failed.append([p for p, _ in batch])  # the batch, then the event alone
            raise RuntimeError("a bug, once")
        await real_apply(conn, batch, schema)

    monkeypatch.setattr(audit, "apply", flaky)
    await rebuild([PROJECTIONS[n] for n in TABLES], db_url, nc, batch_size=4)
    assert failed[-1] == [target] and len(failed[0]) > 1  # the status rows were staged before
    await status_fold_matches(db_url, nc)
    conn = await connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM parked_events") == 0
        assert await conn.fetchval("SELECT count(*) FROM ms_status") == 9
    finally:
        await conn.close()

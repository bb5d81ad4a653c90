"""Faults, against real servers, under a steady load through the intake (``-m faults``): the
database refusing connections and its backends terminated, poison messages on the events
subjects, the projections killed with SIGKILL. After each: every acknowledged event is in the
stream exactly once and every read model equals a rebuild. Figures: tests/faults_support.record.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import subprocess
import sys
import time

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from events import ENCODER
from projections import PROJECTIONS
from projections.db import connect
from projections.parking import blame
from projections.rebuild import rebuild, replay_parked
from projections.runner import Runner
from services.app.embedded import free_port
from services.query.requests import ParkedParams
from tests.conftest import cli_env, cloudevent, plan_project, request, wait_for
from tests.faults_support import (
    PgProxy,
    SteadyLoad,
    assert_equals_rebuild,
    check_quiet,
    log_lines,
    lost_and_duplicated,
    positions,
    projections_process,
    read_models,
    record,
    time_to_reach,
)

pytestmark = pytest.mark.faults

RECOVER_WITHIN = 10.0  # seconds after the database is back
OUTAGE_S = float(os.environ.get("FAULTS_OUTAGE_S", 20))  # shorter while developing


async def stop_process(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        raise AssertionError("the projections ignored SIGTERM for 15 s") from None


async def test_a_runner_that_loses_its_database_says_so_and_comes_back(intake, nc, db_url):
    """In process, to read its state: restarts counted, not ready once down for long, back."""
    for ce in plan_project("p", "m"):
        await request(nc, ce)
    proxy = await PgProxy(db_url).start()
    stop = asyncio.Event()
    runner = Runner(PROJECTIONS["status"], proxy.url, nc)
    task = asyncio.create_task(runner.run(stop))
    restarts_before = restarts_counted("status")
    try:
        await wait_for(lambda: _at(runner, 4), what="the runner to apply the plan")
        assert runner.state.ready(time.monotonic()) == (True, "")
        await proxy.refuse()
        reply = await request(
            nc,
            cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "t1"}),
        )

        async def failing() -> bool:
            return runner.state.restarts >= 3 and not runner.state.active

        await wait_for(failing, timeout=15, what="the runner to fail and retry")
        assert not task.done()  # it never dies
        assert runner.state.running and runner.state.last_error
        assert restarts_counted("status") - restarts_before >= 3
        ready, why = runner.state.ready(time.monotonic() + 31)
        assert not ready and "down after" in why and runner.state.last_error in why
        await proxy.reopen()
        back = time.monotonic()
        await wait_for(
            lambda: _at(runner, reply.events[-1].position), timeout=RECOVER_WITHIN, what="recovery"
        )
        assert runner.state.active and runner.state.ready(time.monotonic())[0]
        record(
            "runner loses its database (in process)", recover_s=round(time.monotonic() - back, 2)
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await proxy.stop()
    assert not runner.state.running


def restarts_counted(projection: str) -> float:
    labels = {"projection": projection}
    return REGISTRY.get_sample_value("milestones_projection_restarts_total", labels) or 0.0


async def ready(port: int) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{port}/ready")


async def _activity(db_url: str) -> list:
    conn = await asyncpg.connect(db_url)
    try:
        return [
            tuple(r)
            for r in await conn.fetch(
                "SELECT pid, datname, application_name, state FROM pg_stat_activity "
                "WHERE datname IS NOT NULL"
            )
        ]
    finally:
        await conn.close()


async def _at(runner: Runner, position: int) -> bool:
    return runner.state.position >= position


async def test_the_database_refuses_connections_and_its_backends_are_terminated(
    intake, nc, settings, db_url, tmp_path
):
    proxy = await PgProxy(db_url).start()
    load = await SteadyLoad(nc).start()
    log_path = tmp_path / "projections.log"
    ops = free_port()
    proc = await projections_process(settings, proxy.url, log_path, ops_port=ops)
    figures: dict[str, object] = {}
    try:
        await time_to_reach(db_url, load.last, timeout=60)  # started and caught up
        assert (await ready(ops)).status_code == 200
        # (1) the database refuses connections for 20 s, live connections are dropped
        await proxy.refuse()
        await asyncio.sleep(OUTAGE_S)
        assert proc.returncode is None
        down = await ready(ops)
        assert down.status_code == 503 and "database" in down.text, down.text
        await proxy.reopen()
        figures["outage_recover_s"] = round(await time_to_reach(db_url, load.last, 30), 2)
        assert (await ready(ops)).status_code == 200
        assert await check_quiet(db_url, nc, load) == (0, 0)  # lost, duplicated
        # (2) the runners' backends terminated ten times under load
        admin = await asyncpg.connect(db_url, server_settings={"application_name": "faults"})
        try:
            killed = 0
            for _ in range(10):
                killed += await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'milestones'"
                )
                last_kill = time.monotonic()
                await asyncio.sleep(0.5)
        finally:
            await admin.close()
        assert killed >= 10, await _activity(db_url)  # the runners' connections were there
        figures["terminated_backends"] = killed
        await time_to_reach(db_url, load.last, 30)
        figures["terminate_recover_s"] = round(time.monotonic() - last_kill, 2)
        assert await check_quiet(db_url, nc, load) == (0, 0)
        await load.stop()
        await time_to_reach(db_url, load.last, 30)
    finally:
        await load.stop()
        if proc.returncode is None:
            assert await stop_process(proc) == 0
        await proxy.stop()
    failures = [e for e in log_lines(log_path) if e.get("event") == "runner failed, restarting"]
    assert failures and all(e.get("error") and e.get("blame") for e in failures)
    # one runner reads the log for the three read models: its failures name all three
    assert "status+history+audit" in {e.get("projection") for e in failures}
    assert not [e for e in log_lines(log_path) if e.get("event") == "event parked"]
    lost, duplicated = await lost_and_duplicated(nc, load.acked)
    await assert_equals_rebuild(db_url, nc)
    assert (lost, duplicated) == (0, 0)
    for what, recover in (("outage", "outage_recover_s"), ("terminate", "terminate_recover_s")):
        assert figures[recover] < RECOVER_WITHIN, (what, figures)
    record(
        "database refuses connections 20 s, then 10 rounds of pg_terminate_backend",
        runs=1,
        acknowledged=len(load.acked),
        lost=lost,
        duplicated=duplicated,
        restarts_logged=len(failures),
        **figures,
    )


async def test_sigkill_of_the_projections_under_load(intake, nc, settings, db_url, tmp_path):
    """Killed at a random instant after it started applying, five times; after each restart it
    catches up by itself, and with the load paused the read models equal a rebuild."""
    load = await SteadyLoad(nc).start()
    log_path = tmp_path / "projections.log"
    recoveries: list[float] = []
    kills = 5
    rng = random.Random(13)
    proc = await projections_process(settings, db_url, log_path)
    try:
        for _ in range(kills):
            before = min((await positions(db_url)).values() or [0])

            async def moving(before=before) -> bool:
                return min((await positions(db_url)).values() or [0]) > before

            await wait_for(moving, timeout=60, what="the projections to apply a batch")
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)  # wherever it is
            await proc.wait()
            proc = await projections_process(settings, db_url, log_path)
            restarted, mark = time.monotonic(), load.last

            async def acked_since(mark=mark) -> bool:
                return load.last > mark

            # recovered: an event acknowledged after the restart is applied (only the new
            # process can have applied it); the time includes the process's start
            await wait_for(acked_since, timeout=30, what="the load to go on")
            await time_to_reach(db_url, load.last, 60)
            recoveries.append(time.monotonic() - restarted)
            assert await check_quiet(db_url, nc, load) == (0, 0)  # lost, duplicated
        await load.stop()
        await time_to_reach(db_url, load.last, 30)
        assert await stop_process(proc) == 0
    finally:
        await load.stop()
        if proc.returncode is None:
            proc.kill()
    lost, duplicated = await lost_and_duplicated(nc, load.acked)
    await assert_equals_rebuild(db_url, nc)
    assert (lost, duplicated) == (0, 0)
    record(
        "projections process killed with SIGKILL under load, restarted",
        runs=kills,
        acknowledged=len(load.acked),
        lost=lost,
        duplicated=duplicated,
        recover_s=[round(r, 2) for r in recoveries],
    )


# -- poison --------------------------------------------------------------------------------------
def stored(subject: str, type_: str, data: dict, **extra: object) -> bytes:
    """An event as the log holds it (what a writer with the services' identity could append)."""
    return ENCODER.encode(
        {
            "id": f"raw-{type_}-{time.monotonic_ns()}",
            "source": "faults",
            "type": type_,
            "subject": subject,
            "time": "2026-11-24T10:00:00Z",
            "recordedtime": "2026-11-24T10:00:00Z",
            "correlationid": "c",
            "causationid": "c",
            "data": {"type": type_, **data},
            **extra,
        }
    )


async def cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **cli_env(settings)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def parked_rows(db_url: str, projection: str) -> dict[int, tuple]:
    conn = await connect(db_url)
    try:
        return {
            r["position"]: (r["project"], r["behind"], r["error"], bytes(r["payload"]))
            for r in await conn.fetch(
                "SELECT position, project, behind, error, payload FROM parked_events "
                "WHERE projection = $1 ORDER BY position",
                projection,
            )
        }
    finally:
        await conn.close()


async def test_poison_is_parked_with_its_project_behind_it_and_the_rest_goes_on(
    system, nc, db_url, settings
):
    js = nc.jetstream()
    projects = ("nul", "garbage", "unknown", "dup", "fine")
    acked: dict[str, int] = {}
    for p in projects:
        reply = await request(nc, plan_project(p, "m1") + plan_project(p, "m2")[1:])
        assert reply.accepted, reply
        acked.update({e.id: e.position for e in reply.events})
    poison = {
        "nul": ("milestones.events.nul.m1", b"\x00\x01\x00garbage\xff\x00"),
        "garbage": ("milestones.events.garbage", b"{this is not json"),
        "unknown": (
            "milestones.events.unknown.m1",
            stored("milestones.events.unknown.m1", "MilestoneTeleported", {"project_id": "x"}),
        ),
        # decodes and folds, but status cannot store a second row for the project
        "dup": (
            "milestones.events.dup",
            stored("milestones.events.dup", "ProjectCreated", {"project_id": "dup", "name": "2"}),
        ),
    }
    at = {
        p: (await js.publish(subject, body, headers={"Poison": p})).seq
        for p, (subject, body) in poison.items()
    }
    later: dict[str, int] = {}
    for p in projects:  # later events of every project, on the milestone no poison sits on
        reply = await request(
            nc,
            cloudevent("TaskCompleted", {"project_id": p, "milestone_id": "m2", "task_id": "t1"}),
        )
        assert reply.accepted, (p, reply)
        acked.update({e.id: e.position for e in reply.events})
        later[p] = reply.events[-1].position
    last = max(later.values())
    await time_to_reach(db_url, last, 30)
    status = await parked_rows(db_url, "status")
    for p, seq in at.items():
        assert status[seq][0] == p and status[seq][1] is None and status[seq][3] == poison[p][1]
        assert status[later[p]][1] == seq  # held behind it
        assert status[later[p]][2] == f"behind parked position {seq}"
    assert "cannot decode" in status[at["nul"]][2] and "cannot decode" in status[at["unknown"]][2]
    assert "UniqueViolation" in status[at["dup"]][2]
    assert later["fine"] not in status  # other projects go on
    audit = await parked_rows(db_url, "audit")
    assert at["dup"] not in audit and later["dup"] not in audit  # audit can hold the duplicate
    assert set(audit) == set(status) - {at["dup"], later["dup"]}
    conn = await connect(db_url)
    try:
        done = {
            r["project_id"]: r["tasks"]["t1"]
            for r in await conn.fetch(
                "SELECT project_id, tasks FROM ms_status WHERE milestone_id = 'm2'"
            )
        }
    finally:
        await conn.close()
    assert done == {"nul": False, "garbage": False, "unknown": False, "dup": False, "fine": True}
    runners = {r.checkpoint: r.state for r in system.runners}
    assert all(s.active and s.restarts == 0 for s in runners.values()), runners
    shown = {r["position"]: r for r in await system.queries.parked(ParkedParams())}
    assert shown[at["nul"]]["payload"] is None  # not UTF-8: base64 of the raw bytes
    assert base64.b64decode(shown[at["nul"]]["payload_base64"]) == poison["nul"][1]
    assert shown[at["garbage"]]["payload"] == "{this is not json"
    assert shown[at["nul"]]["headers"] == {"Poison": "nul"}  # kept with the message
    # what cannot ever apply stays parked, in order; `rebuild all` parks the same and succeeds
    assert await replay_parked(PROJECTIONS["status"], db_url) == (0, len(status))
    assert await parked_rows(db_url, "status") == status
    live = await read_models(db_url)
    rebuilt = await cli(settings, "rebuild", "all", "--database-url", db_url)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"status: {len(status)} event(s) parked" in rebuilt.stdout
    assert await read_models(db_url) == live
    lost, duplicated = await lost_and_duplicated(nc, acked)
    record(
        "poison messages on the events subjects (NUL, garbage, unknown type, unstorable)",
        runs=1,
        acknowledged=len(acked),
        poison=len(poison),
        parked_status=len(status),
        lost=lost,
        duplicated=duplicated,
    )


async def test_a_parked_reschedule_replays_in_order_and_equals_a_rebuild(
    system, nc, db_url, monkeypatch
):
    """The reported bug: a reschedule parked (a read-model bug), a later one applied live, the
    replay moving the due date back. Now the later one waits behind it."""
    for ce in plan_project("p", "m") + plan_project("other", "m"):
        assert (await request(nc, ce)).accepted
    status = PROJECTIONS["status"]
    real_apply = status.apply

    async def buggy(conn, batch, schema):  # a bug in the read model, for one kind of event
        if any(getattr(e.data, "reason", None) == "vendor slip" for _, e in batch):
            raise ValueError("bug: cannot apply a vendor slip")
        await real_apply(conn, batch, schema)

    monkeypatch.setattr(status, "apply", buggy)

    def reschedule(project: str, due: str, reason: str) -> dict:
        return cloudevent(
            "MilestoneRescheduled",
            {"project_id": project, "milestone_id": "m", "new_due": due, "reason": reason},
        )

    first = await request(nc, reschedule("p", "2027-02-01", "vendor slip"))
    second = await request(nc, reschedule("p", "2027-03-01", "scope"))
    other = await request(nc, reschedule("other", "2027-04-01", "scope"))
    await time_to_reach(db_url, other.events[-1].position, 30, ("status",))
    parked = await parked_rows(db_url, "status")
    assert sorted(parked) == [first.events[-1].position, second.events[-1].position]
    conn = await connect(db_url)

    async def due(project: str):
        return await conn.fetchval(
            "SELECT due FROM ms_status WHERE project_id = $1 AND milestone_id = 'm'", project
        )

    try:
        assert str(await due("p")) == "2026-12-01"  # neither: the later one waits behind
        assert str(await due("other")) == "2027-04-01"
        monkeypatch.setattr(status, "apply", real_apply)  # the fix is deployed
        assert await replay_parked(status, db_url) == (2, 0)
        assert str(await due("p")) == "2027-03-01"  # in stream order: the later date stands
        third = await request(nc, reschedule("p", "2027-05-01", "scope"))
        await time_to_reach(db_url, third.events[-1].position, 30, ("status",))
        assert str(await due("p")) == "2027-05-01"  # the live runner holds nothing back now
    finally:
        await conn.close()
    live = await assert_equals_rebuild(db_url, nc)
    assert live["parked_events"] == []
    await rebuild(status, db_url, nc)  # and alone


async def test_an_unknown_failure_is_retried_then_parked_and_the_runner_goes_on(
    intake, nc, db_url, monkeypatch
):
    """A bug nobody classified: the batch is tried again (no restart), then the event parked
    after ``park_after`` failures; the rest of the projection goes on."""
    for ce in plan_project("p", "m") + plan_project("q", "m"):
        assert (await request(nc, ce)).accepted
    history = PROJECTIONS["history"]
    real_apply, calls = history.apply, []

    async def flaky(conn, batch, schema):
        if any(getattr(e.data, "task_id", None) == "boom" for _, e in batch):
            calls.append([p for p, _ in batch])
            raise RuntimeError("a bug")
        await real_apply(conn, batch, schema)

    monkeypatch.setattr(history, "apply", flaky)
    bad = await request(
        nc,
        cloudevent(
            "TaskAdded", {"project_id": "p", "milestone_id": "m", "task_id": "boom", "title": "b"}
        ),
    )
    good = await request(
        nc, cloudevent("TaskCompleted", {"project_id": "q", "milestone_id": "m", "task_id": "t1"})
    )
    stop = asyncio.Event()
    runner = Runner(history, db_url, nc, park_after=3)
    task = asyncio.create_task(runner.run(stop))
    try:
        await time_to_reach(db_url, good.events[-1].position, 30, ("history",))
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    parked = await parked_rows(db_url, "history")
    position = bad.events[-1].position
    assert list(parked) == [position] and parked[position][2].startswith("failed 3 times: ")
    assert sum(1 for c in calls if c == [position]) == 3  # tried alone three times
    assert runner.state.restarts == 0


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (asyncpg.InternalClientError("cannot switch to state 15"), "infrastructure"),
        (asyncpg.ObjectNotInPrerequisiteStateError("55000"), "infrastructure"),
        (asyncpg.AdminShutdownError("terminating connection"), "infrastructure"),
        (asyncpg.ConnectionDoesNotExistError("closed"), "infrastructure"),
        (asyncpg.InterfaceError("connection is closed"), "infrastructure"),
        (ConnectionRefusedError(111, "refused"), "infrastructure"),
        (TimeoutError(), "infrastructure"),
        (asyncpg.UniqueViolationError("duplicate key"), "event"),
        (asyncpg.CharacterNotInRepertoireError("invalid byte sequence"), "event"),
        (asyncpg.DataError("value out of int32 range"), "event"),
        (ValueError("bad date"), "event"),
        (OverflowError("date value out of range"), "event"),
        (asyncpg.UndefinedColumnError("no such column"), "unknown"),
        (KeyError("missing"), "unknown"),
    ],
)
def test_blame_tells_the_infrastructure_from_the_event(exc, fault):
    assert blame(exc) == fault

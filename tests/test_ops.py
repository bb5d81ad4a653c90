"""Every service process is observable and supervised, and stops on SIGTERM within a bound
(issue 13): ``/health``, ``/ready`` and ``/metrics`` on each process kind, on real servers;
``/ready`` names what fails (NATS gone, a stalled runner, the database gone); SIGTERM ends
``serve`` and ``dev`` within ``MILESTONES_SHUTDOWN_TIMEOUT_S`` (10 s) with NATS killed -9, the
database not answering, and a dashboard's live stream open. Issue 14: the gauges (projection
lag, parked now, deliveries pending and failed, intake in flight) move as they should in a
parsed scrape, and every intake line about a CloudEvent names it."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.app.embedded import EmbeddedNats, free_port
from services.app.settings import Settings
from services.app.supervise import TASK_FAILURES, Closer, Shutdown, Supervisor
from tests.conftest import cli_env, cloudevent, plan_project, request, wait_for
from tests.ops_support import (
    BOUND,
    MARGIN,
    PgProxy,
    Recorder,
    Service,
    service_env,
    tokens,
    true,
)


# == the pieces, in process =======================================================================
async def test_a_failing_task_is_logged_counted_and_restarted_with_capped_backoff(monkeypatch):
    from services.app import supervise

    monkeypatch.setattr(supervise, "log", recorded := Recorder())
    supervisor = Supervisor()
    runs: list[float] = []

    async def flaky(stop: asyncio.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) <= 3:
            try:
                raise ConnectionError("the server went away")
            except ConnectionError as exc:
                raise RuntimeError(f"run {len(runs)} failed") from exc
        await stop.wait()

    before = TASK_FAILURES.labels("flaky")._value.get()
    state = supervisor.start("flaky", flaky)
    await wait_for(lambda: true(len(runs) == 4 and state.running), 10, "the fourth run")
    assert state.restarts == 3 and TASK_FAILURES.labels("flaky")._value.get() == before + 3
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert gaps[1] > gaps[0] * 1.5 and gaps[2] > gaps[1] * 1.5, gaps  # exponential
    assert state.ready(time.monotonic())[0] is False  # just restarted: not yet settled
    assert "run 3 failed" in state.ready(time.monotonic())[1]
    failures = [f for level, e, f in recorded.lines if e == "task failed, restarting"]
    assert [f["error"] for f in failures] == [f"RuntimeError: run {i} failed" for i in (1, 2, 3)]
    assert all(f["task"] == "flaky" and f["exc_info"] is not None for f in failures)
    assert failures[0]["cause"] == "ConnectionError: the server went away"
    assert [f["restart_in_s"] for f in failures] == [0.1, 0.2, 0.4]
    assert await supervisor.shutdown(grace=2) == []
    assert state.stopped and not state.ready(time.monotonic())[0]


async def test_a_task_that_ends_unasked_is_restarted_and_backoff_is_capped(monkeypatch):
    from services.app import supervise

    monkeypatch.setattr(supervise, "BACKOFF_MAX", 0.4)  # the cap, scaled down from 5 s
    supervisor = Supervisor()
    runs: list[float] = []

    async def returns(stop: asyncio.Event) -> None:
        runs.append(time.monotonic())

    state = supervisor.start("returns", returns)
    await wait_for(lambda: true(len(runs) >= 8), 10, "eight runs")
    await supervisor.shutdown(grace=1)
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert max(gaps) < 0.4 + 0.2 and gaps[-1] > 0.3, gaps  # grew to the cap, stayed there
    assert state.last_error == "ended without being asked to stop"


async def test_a_shutdown_step_that_ignores_cancellation_is_abandoned_in_time():
    shutdown = Shutdown(timeout=3)
    closer = Closer(shutdown)
    closed: list[str] = []

    async def stubborn() -> None:
        until = time.monotonic() + 3
        while time.monotonic() < until:  # (then it ends, so that the test's loop can close)
            try:
                await asyncio.sleep(until - time.monotonic())
            except asyncio.CancelledError:
                continue  # as some client libraries do while they "drain"

    async def fine() -> None:
        closed.append("fine")

    closer.push("fine", fine)
    closer.push("stubborn", stubborn, cap=1.0, fallback=lambda: closed.append("fallback"))
    started = time.monotonic()
    await closer.aclose()
    assert time.monotonic() - started < 1.5
    assert closed == ["fallback", "fine"] and shutdown.abandoned == ["stubborn"]


# == real processes ==============================================================================
@pytest.fixture
async def services() -> AsyncIterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.kill()


# the gauges each kind serves (issue 14, point 7), as the Prometheus parser reads /metrics
GAUGES = {
    "intake": {"milestones_intake_in_flight"},
    "projections": {"milestones_projection_lag", "milestones_projection_parked_now"},
    "query": set(),
    "notifier": {"milestones_deliveries"},
}
EXPECTED = {
    "intake": {"nats", "task:inbox", "task:ledger", "task:accounts"},
    "projections": {"nats", "database"} | {f"projection:{p}" for p in ("status", "history")},
    "query": {"nats", "database"},
    "notifier": {"nats", "database", "task:notifier"},
}


async def test_each_service_kind_answers_health_ready_metrics_and_stops_with_nats_killed(
    settings: Settings,
    nats_server: EmbeddedNats,
    db_url: str,
    tmp_path: Path,
    services: list[Service],
):
    token = await tokens(nats_server)
    for kind in EXPECTED:
        env = service_env(settings, tmp_path, MILESTONES_DATABASE_URL=db_url)
        services.append(Service.start(kind, ["serve", kind], env, tmp_path))
        services[-1].extra["http"] = f"http://127.0.0.1:{env['MILESTONES_HTTP_PORT']}"
    reader = {"Authorization": f"Bearer {token['reader']}"}
    for s in services:
        body = await s.ready_is(200, 90)
        assert body["ready"] is True and EXPECTED[s.name] <= set(body["checks"]), body
        assert all(c["ok"] and isinstance(c["detail"], str) for c in body["checks"].values())
        health = await s.get("/health")
        assert health is not None and health.json() == {"status": "ok"}
        refused = await s.get("/metrics")
        assert refused is not None and refused.status_code == 401  # a reader's token, as before
        metrics = await s.get("/metrics", headers=reader)
        assert metrics is not None and metrics.status_code == 200
        assert "milestones_ready 1.0" in metrics.text
        families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
        assert GAUGES[s.name] <= {n for n, f in families.items() if f.type == "gauge"}, s.name
        assert 'milestones_ready_check{check="nats"} 1.0' in metrics.text
    intake, projections = services[0], services[1]
    metrics = await projections.get("/metrics", headers=reader)
    # one runner reads the log for status, history and audit
    up = 'milestones_task_up{task="projection-status+history+audit"} 1.0'
    assert metrics is not None and up in metrics.text
    async with httpx.AsyncClient(timeout=5) as http:  # the API's port serves them too
        api = intake.extra["http"]
        assert (await http.get(f"{api}/ready")).status_code == 200
        assert (await http.get(f"{api}/health")).status_code == 200

    nats_server.kill()  # kill -9
    for s in services:
        body = await s.ready_is(503, 15, nats=False)
        assert body["ready"] is False and "not connected" in body["checks"]["nats"]["detail"]
    # requests in flight that cannot finish (the log is gone) while the intake is told to stop
    http = httpx.AsyncClient(timeout=30)
    pending = [
        asyncio.create_task(
            http.post(
                f"{intake.extra['http']}/events",
                content=msgspec.json.encode(
                    cloudevent("ProjectCreated", {"project_id": f"p{i}", "name": "P"})
                ),
                headers={"Authorization": f"Bearer {token['publisher']}"},
            )
        )
        for i in range(5)
    ]
    await asyncio.sleep(0.5)
    codes = await asyncio.gather(*(s.terminate() for s in services))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await http.aclose()
    took = {s.name: round(s.stopped_in or 0, 2) for s in services}
    print("stopped in", took)
    assert codes == [0, 0, 0, 0], {s.name: s.log.read_text()[-2000:] for s in services}
    assert max(took.values()) < BOUND + MARGIN, took
    for s in services:
        assert any(e.get("event") == "stopped cleanly" or "abandoned" in e for e in s.events())


# == the database gone ===========================================================================
async def test_projections_ready_names_a_stalled_runner_and_stops_with_the_database_gone(
    intake,
    settings: Settings,
    nats_server: EmbeddedNats,
    nc,
    db_url: str,
    tmp_path: Path,
    services: list[Service],
):
    proxy = await PgProxy(db_url).start()
    try:
        env = service_env(
            settings, tmp_path, MILESTONES_DATABASE_URL=proxy.url, MILESTONES_READY_STALL_S="2"
        )
        projections = Service.start("projections", ["serve", "projections"], env, tmp_path)
        services.append(projections)
        await projections.ready_is(200, 60, database=True, **{"projection:status": True})

        # a runner that cannot make progress: its checkpoint row is locked by someone else
        locker = await asyncpg.connect(db_url)
        try:
            held = locker.transaction()
            await held.start()
            await locker.execute("LOCK TABLE milestones.checkpoints IN ACCESS EXCLUSIVE MODE")
            assert (await request(nc, plan_project("stall"))).accepted
            body = await projections.ready_is(
                503, 20, database=True, **{"projection:status": False}
            )
            assert "no progress" in body["checks"]["projection:status"]["detail"], body
            await held.rollback()
        finally:
            await locker.close()
        await projections.ready_is(200, 20, **{"projection:status": True})

        proxy.freeze()  # the database stops answering, connections stay open
        body = await projections.ready_is(503, 20, database=False)
        assert "unreachable" in body["checks"]["database"]["detail"], body
        assert await projections.terminate() == 0, projections.log.read_text()[-3000:]
        print("stopped in", round(projections.stopped_in or 0, 2))
        assert (projections.stopped_in or 0) < BOUND + MARGIN
    finally:
        await proxy.close()


# == milestones dev ==============================================================================
async def test_dev_answers_ready_and_stops_in_time_with_nats_killed_and_a_live_stream_open(
    tmp_path: Path, services: list[Service]
):
    data = tmp_path / "dev"
    ports = {name: free_port() for name in ("nats", "http", "ops")}
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    env |= {"MILESTONES_LOG_FORMAT": "json", "MILESTONES_OPS_PORT": str(ports["ops"])}
    dev = Service.start(
        "dev",
        ["dev", "--data-dir", str(data), "--nats-port", str(ports["nats"])]
        + ["--http-port", str(ports["http"]), "--ops-port", str(ports["ops"])],
        env,
        tmp_path,
    )
    services.append(dev)
    body = await dev.ready_is(200, 120)
    assert {"nats", "database", "projection:status", "task:inbox", "task:notifier"} <= set(
        body["checks"]
    ), body
    reader = json.loads((data / "dev.json").read_text())["credentials"]["reader"]["http_token"]
    auth = {"Authorization": f"Bearer {reader}"}
    metrics = await dev.get("/metrics", headers=auth)
    assert metrics is not None and 'milestones_task_up{task="inbox"} 1.0' in metrics.text

    async with httpx.AsyncClient(timeout=30) as http:
        base = f"http://127.0.0.1:{ports['http']}"
        assert (await http.get(f"{base}/ready")).status_code == 200
        async with http.stream("GET", f"{base}/ui/live", headers=auth) as live:
            assert live.status_code == 200
            chunks = live.aiter_bytes()
            assert (await anext(chunks)).startswith(b"retry:")  # the stream is open
            nats_pid = next(e["pid"] for e in dev.events() if e["event"] == "nats-server started")
            os.kill(nats_pid, signal.SIGKILL)
            await dev.ready_is(503, 20, nats=False)
            assert await dev.terminate() == 0, dev.log.read_text()[-3000:]
    print("stopped in", round(dev.stopped_in or 0, 2))
    assert (dev.stopped_in or 0) < BOUND + MARGIN
    assert any(e["event"] == "stopped cleanly" for e in dev.events()), dev.log.read_text()[-3000:]
    left = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    assert left.returncode == 1, f"left running: {left.stdout}"  # nats-server and postgres too


async def test_a_stop_during_start_up_is_prompt_and_liveness_answers_meanwhile(
    settings: Settings, db_url: str, tmp_path: Path, services: list[Service]
):
    """The database does not answer from the start: the service waits in its start-up (where
    nothing watches a stop event), yet /health answers, /ready says "starting", and SIGTERM
    ends it at once."""
    proxy = await PgProxy(db_url).start()
    proxy.freeze()
    try:
        env = service_env(settings, tmp_path, MILESTONES_DATABASE_URL=proxy.url)
        projections = Service.start("projections", ["serve", "projections"], env, tmp_path)
        services.append(projections)
        body = await projections.ready_is(503, 30, startup=False)
        assert body["checks"]["startup"]["detail"] == "the services are starting"
        health = await projections.get("/health")
        assert health is not None and health.status_code == 200
        assert await projections.terminate() == 0, projections.log.read_text()[-3000:]
        # at once: no step of the shutdown waits for the database (asyncpg alone would, 60 s)
        took = projections.stopped_in or 0
        assert took < BOUND / 2, (took, projections.log.read_text()[-3000:])
    finally:
        await proxy.close()


WATCHDOG = """
import asyncio, sys, time
from pathlib import Path
from services.app import supervise

async def main(shutdown):
    shutdown.on_force(lambda: Path(sys.argv[1]).write_text("forced"))
    shutdown.serving()
    print("serving", flush=True)
    await asyncio.to_thread(time.sleep, 3600)  # a blocking call: no cancellation reaches it
    return 0

sys.exit(supervise.run(main, 2))
"""


async def test_the_watchdog_ends_a_process_that_cannot_finish_within_the_bound(tmp_path: Path):
    evidence = tmp_path / "forced"
    proc = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(evidence)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "serving"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 10)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1 and evidence.read_text() == "forced"  # the last-resort callbacks ran
    assert 1.5 < took < 2.0 + 0.5, took


SIGNALS = """
import asyncio, os, signal, sys, time
from services.app import supervise

async def main(shutdown):
    shutdown.serving()
    for pause in map(float, sys.argv[1:]):
        await asyncio.sleep(pause)
        os.kill(os.getpid(), signal.SIGINT)
    await asyncio.to_thread(time.sleep, 5)  # a slow stop, so that a second signal can matter
    return 0

sys.exit(supervise.run(main, 10))
"""


@pytest.mark.parametrize(
    ("pauses", "code"),
    [(["0", "0"], 0), (["0", "1.3"], 128 + signal.SIGINT)],
    ids=["delivered twice at once: one request", "pressed again later: exit now"],
)
async def test_a_repeated_signal_is_one_request_and_a_later_one_ends_the_process(
    pauses: list[str], code: int
):
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SIGNALS, *pauses)
    assert await asyncio.wait_for(proc.wait(), 15) == code
    if code:
        assert time.monotonic() - started < 4  # at once, not after the 5 s stop


async def test_a_start_up_error_keeps_its_exit_code_and_its_one_line(
    settings: Settings, tmp_path: Path
):
    """The bounded shutdown that follows a failed start-up does not mask the failure."""
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    env |= service_env(settings, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "serve",
        "projections",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "milestones: no database: set MILESTONES_DATABASE_URL" in err.decode()


async def test_a_taken_ops_port_is_said_once_and_taken_when_it_frees(monkeypatch, tmp_path):
    import socket

    from services.app import serving
    from services.app.readiness import LateAuthenticator, Readiness

    monkeypatch.setattr(serving, "BIND_RETRY", 0.2)
    monkeypatch.setattr(serving, "log", recorded := Recorder())
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    settings = Settings(ops_port=port, data_dir=str(tmp_path))
    supervisor = Supervisor()
    supervisor.start("ops-http", serving.ops_listener(settings, Readiness(), LateAuthenticator()))
    try:
        await asyncio.sleep(1.0)  # several attempts
        said = [e for level, e, _ in recorded.lines if level == "error"]
        assert said == ["ops listener not started, retrying"]
        holder.close()

        async def answers() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    health = await http.get(f"http://127.0.0.1:{port}/health")
                    ready = await http.get(f"http://127.0.0.1:{port}/ready")
            except httpx.TransportError:
                return False
            assert ready.status_code == 503  # nothing attached: "starting"
            return health.status_code == 200

        await wait_for(answers, 10, "the ops listener on the freed port")
    finally:
        holder.close()
        assert await supervisor.shutdown(grace=5) == []


# == gauges (issue 14, point 7), read as a scrape reads them ======================================
def scraped(name: str, **labels: str) -> float | None:
    """A sample of this process's ``/metrics`` text, parsed by the Prometheus parser."""
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


async def gauge_is(value: float, name: str, timeout: float = 15, **labels: str) -> None:
    await wait_for(
        lambda: true(scraped(name, **labels) == value),
        timeout,
        f"{name}{labels} == {value} (is {scraped(name, **labels)})",
    )


@contextlib.asynccontextmanager
async def checkpoint_held(db_url: str, projection: str) -> AsyncIterator[None]:
    """The projection's checkpoint row locked: its runner reads batches but cannot commit one."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO milestones.checkpoints (projection) VALUES ($1) ON CONFLICT DO NOTHING",
            projection,
        )
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM milestones.checkpoints WHERE projection = $1 FOR UPDATE", projection
            )
            yield
    finally:
        await conn.close()


async def test_projection_lag_and_parked_now_are_right_from_the_start_and_follow_the_runner(
    intake, nc, db_url: str
):
    from projections import PROJECTIONS
    from projections.runner import LAG, PARKED_NOW, Runner

    stop = asyncio.Event()
    runner = Runner(PROJECTIONS["status"], db_url, nc)
    LAG.labels("status").set(-1)
    async with checkpoint_held(db_url, "status"):
        assert (await request(nc, plan_project("lag"))).accepted  # 4 events, one atomic batch
        task = asyncio.create_task(runner.run(stop))
        await gauge_is(4, "milestones_projection_lag", projection="status")  # at start
    await gauge_is(0, "milestones_projection_lag", projection="status")
    assert runner.position > 0
    async with checkpoint_held(db_url, "status"):
        assert (await request(nc, plan_project("lag2", tasks=("t1",)))).accepted
        await gauge_is(3, "milestones_projection_lag", projection="status")  # while running
    await gauge_is(0, "milestones_projection_lag", projection="status")

    # an event this version cannot read is parked: parked now 1
    poison = cloudevent("TaskCompleted", {"project_id": "lag", "milestone_id": "m1", "task": 1})
    poison |= {"subject": "milestones.events.lag.m1", "schemaversion": 99}
    await nc.jetstream().publish("milestones.events.lag.m1", msgspec.json.encode(poison))
    await gauge_is(1, "milestones_projection_parked_now", projection="status")
    stop.set()
    await task
    # a new runner (a restarted process) says so before any batch: the idle re-read of the
    # parked set comes after 5 idle ticks, later than this wait
    PARKED_NOW.labels("status").set(-1)
    LAG.labels("status").set(-1)
    stop = asyncio.Event()
    task = asyncio.create_task(Runner(PROJECTIONS["status"], db_url, nc).run(stop))
    try:
        await gauge_is(1, "milestones_projection_parked_now", 4, projection="status")
        await gauge_is(0, "milestones_projection_lag", 4, projection="status")
    finally:
        stop.set()
        await task


async def test_intake_in_flight_counts_the_cloudevents_awaiting_a_verdict(intake, nc):
    gate = asyncio.Event()
    log, append = intake.committer.log, intake.committer.log.append

    async def held(messages):  # the real append, once the test lets it go
        await gate.wait()
        return await append(messages)

    log.append = held
    assert scraped("milestones_intake_in_flight") == 0
    sent = [cloudevent("ProjectCreated", {"project_id": f"f{i}", "name": "F"}) for i in range(3)]
    batch = [cloudevent("ProjectCreated", {"project_id": f"b{i}", "name": "B"}) for i in range(2)]
    replies = [asyncio.create_task(request(nc, ce)) for ce in [*sent, batch]]
    await gauge_is(5, "milestones_intake_in_flight")  # three single events and a batch of two
    gate.set()
    assert all(r.accepted for r in await asyncio.gather(*replies))
    await gauge_is(0, "milestones_intake_in_flight")


async def test_deliveries_pending_then_failed(settings: Settings, db_url: str, nc):
    from services.app.wiring import running
    from tests.webhook_receiver import Receiver

    receiver = await Receiver().start()
    receiver.fail_next = 100  # 503 to every attempt
    full = msgspec.structs.replace(
        settings, database_url=db_url, notify_backoff_ms=4000, notify_max_attempts=2
    )
    try:
        async with running(full, intake=True, projections=True, notifier=True):
            await gauge_is(0, "milestones_deliveries", status="pending")
            await gauge_is(0, "milestones_deliveries", status="failed")
            p = {"project_id": "hooked"}
            events = [
                cloudevent("ProjectCreated", p | {"name": "Hooked"}),
                cloudevent(
                    "StakeholderSubscribed",
                    p | {"stakeholder": "ops", "url": receiver.url, "secret": "s" * 20},
                ),
                cloudevent(
                    "MilestonePlanned",
                    p | {"milestone_id": "m", "name": "M", "kind": "event", "due": "2030-01-01"},
                ),
                cloudevent("TaskAdded", p | {"milestone_id": "m", "task_id": "t", "title": "T"}),
            ]
            assert (await request(nc, events)).accepted
            done = {"milestone_id": "m", "task_id": "t"}
            assert (await request(nc, cloudevent("TaskCompleted", p | done))).accepted
            await gauge_is(1, "milestones_deliveries", 20, status="pending")  # retried later
            await wait_for(lambda: true(bool(receiver.requests)), 20, "the first attempt")
            await gauge_is(1, "milestones_deliveries", 30, status="failed")  # gave up
            assert scraped("milestones_deliveries", status="pending") == 0
            assert len(receiver.requests) == 2
    finally:
        await receiver.stop()


async def test_every_intake_line_about_a_command_names_its_cloudevent(intake, nc, monkeypatch):
    """Refused after the decision, before it (unknown type), a batch, and an inbox rejection:
    each line carries the CloudEvent's id, source and correlation id (structlog contextvars)."""
    import structlog

    from services.intake import service

    missing = {"project_id": "nope", "milestone_id": "m", "task_id": "t"}
    decided = cloudevent("TaskCompleted", missing, source="ci", correlationid="corr-1")
    unknown = cloudevent("NoSuchType", {"project_id": "x"}, source="planner")
    batch = [
        cloudevent("ProjectCreated", {"project_id": "bb", "name": "B"}, source="ci"),
        cloudevent("TaskCompleted", missing, source="ci"),
    ]
    inboxed = cloudevent("TaskCompleted", missing, source="tests", correlationid="corr-2")
    capture = structlog.testing.LogCapture()
    lines = capture.entries
    monkeypatch.setattr(  # the intake's logger, at every level, with the message's context
        service,
        "log",
        structlog.wrap_logger(
            None,
            processors=[structlog.contextvars.merge_contextvars, capture],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        ),
    )
    assert (await request(nc, decided)).error.code == "not_found"
    assert not (await request(nc, unknown, "milestones.commands.NoSuchType")).accepted
    assert not (await request(nc, batch)).accepted
    await nc.jetstream().publish("milestones.inbox.TaskCompleted", msgspec.json.encode(inboxed))
    await wait_for(
        lambda: true(any(e["event"] == "inbox message rejected" for e in lines)),
        20,
        "the inbox rejection",
    )
    about = [e for e in lines if e["event"] in ("message refused", "inbox message rejected")]
    refused = [e for e in about if e["event"] == "message refused" and e["path"] == "commands"]
    assert [(e["ce_id"], e["ce_source"]) for e in refused] == [
        (decided["id"], "ci"),
        (unknown["id"], "planner"),
        ([c["id"] for c in batch], "ci"),
    ]
    assert refused[0]["correlationid"] == "corr-1"
    assert refused[2]["correlationid"] == [c["id"] for c in batch]  # none given: its own id
    inbox = [e for e in about if e.get("path") == "inbox" or e["event"].startswith("inbox")]
    assert inbox and all(e["ce_id"] == inboxed["id"] for e in inbox), inbox
    assert all(e["correlationid"] == "corr-2" and e["ce_source"] == "tests" for e in inbox)


def test_http_connections_are_accepted_with_tcp_nodelay() -> None:
    """Every HTTP listener's connections send at once: without TCP_NODELAY each request after
    the first on a kept-alive connection waited ~40 ms (Nagle against a delayed ACK), because
    asyncio sets it only on sockets whose proto is IPPROTO_TCP and ``create_server`` leaves 0."""
    import socket

    from services.app.serving import bind

    listener = bind("127.0.0.1", 0)
    listener.setblocking(True)
    with listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_every_http_server_parses_requests_with_httptools() -> None:
    """The HTTP servers are configured with httptools by name, so uvicorn loads its httptools
    protocol (C) rather than falling back to h11 (pure Python, a tenth more CPU per query and
    half the echo's rate, README "Performance"); without httptools installed, loading fails."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from services.app.serving import http_config

    async def app(scope, receive, send) -> None:  # never called: the config is only loaded
        raise AssertionError(scope)

    config = http_config(app)
    assert config.http == "httptools"  # by name: "auto" would fall back to h11 silently
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol


async def test_a_pooled_connection_is_released_without_a_reset_round_trip(db_url) -> None:
    """The pool (queries, notifier) skips asyncpg's reset query: what a transaction held (an open
    transaction, a transaction-scoped advisory lock) is gone on release, and the session is
    handed out again as it was, settings included (which is why nothing on the pool may make
    session state: ``projections.db.keep_session``)."""
    from projections.db import create_pool, lock_key

    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            first = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SELECT set_config('milestones.probe', 'kept', false)")
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("probe"))
            await conn.execute("BEGIN")  # left open: asyncpg rolls it back on release
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == first  # the same session
            assert not conn.is_in_transaction()
            assert not await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"
            )
            assert await conn.fetchval("SELECT current_setting('milestones.probe')") == "kept"
    finally:
        await pool.close()


def test_every_command_runs_with_the_tuned_collector():
    """``services.app.runtime``: the CLI (every service, a rebuild, the benchmark's load) sets
    the collector's young threshold before it works; a plain interpreter keeps CPython's."""
    from services.app.runtime import GC_YOUNG_THRESHOLD

    script = (
        "import gc, sys\n"
        "before = gc.get_threshold()[0]\n"
        "from services.cli.main import main\n"
        "code = main(['types'])\n"
        "sys.stderr.write(f'{code} {before} {gc.get_threshold()[0]}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stderr.split()[-3:] == ["0", "700", str(GC_YOUNG_THRESHOLD)]


async def test_milestones_rebuild_runs_with_the_replay_threshold(
    settings: Settings, intake, db_url: str
):
    """``milestones rebuild`` (the real command, real nats-server and PostgreSQL; the intake
    made the log's streams) rebuilds with the collector's replay threshold
    (``runtime.replaying``) and gives the process its own back once the rebuild is done. The
    rebuild is the real one; the script only notes the threshold it was called under."""
    from services.app.runtime import GC_YOUNG_THRESHOLD, REPLAY_GC_YOUNG_THRESHOLD

    script = (
        "import gc, json, sys\n"
        "import projections.rebuild as rebuild\n"
        "from services.cli.main import main\n"
        "real, seen = rebuild.rebuild, []\n"
        "async def noted(*args, **kwargs):\n"
        "    seen.append(gc.get_threshold()[0])\n"
        "    return await real(*args, **kwargs)\n"
        "rebuild.rebuild = noted\n"
        f"code = main(['rebuild', 'status', '--database-url', {db_url!r}])\n"
        "sys.stderr.write('\\nnoted ' + json.dumps([code, seen, gc.get_threshold()[0]]))\n"
    )
    env = {**os.environ, **cli_env(settings)}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, env=env
    )
    noted = [line for line in done.stderr.splitlines() if line.startswith("noted ")]
    assert noted, done.stderr
    code, seen, after = json.loads(noted[-1].removeprefix("noted "))
    assert code == 0, done.stderr
    assert seen == [REPLAY_GC_YOUNG_THRESHOLD]  # the one rebuild ran under the replay threshold
    assert after == GC_YOUNG_THRESHOLD


def test_replaying_gives_the_process_its_threshold_back_when_a_rebuild_fails():
    """``runtime.replaying``: the replay threshold inside the block, the process's own after
    it, also when the block raises; the older generations' thresholds are never touched."""
    from services.app.runtime import GC_YOUNG_THRESHOLD, REPLAY_GC_YOUNG_THRESHOLD

    script = (
        "import gc, sys\n"
        "from services.app import runtime\n"
        "runtime.tune()\n"
        "seen = [gc.get_threshold()]\n"
        "try:\n"
        "    with runtime.replaying():\n"
        "        seen.append(gc.get_threshold())\n"
        "        raise RuntimeError('a rebuild failed')\n"
        "except RuntimeError:\n"
        "    seen.append(gc.get_threshold())\n"
        "sys.stderr.write(repr(seen))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    tuned, inside, after = ast.literal_eval(done.stderr.strip().splitlines()[-1])
    assert tuned[0] == GC_YOUNG_THRESHOLD and inside[0] == REPLAY_GC_YOUNG_THRESHOLD
    assert inside[1:] == tuned[1:] and after == tuned


def test_a_started_process_keeps_its_start_up_objects_out_of_the_collector():
    """``runtime.started`` (the services once wired, a rebuild once connected): what start-up
    made is frozen out of every later pass, and a cycle made afterwards is still collected."""
    script = (
        "import gc, sys, weakref\n"
        "import services.app.wiring\n"
        "from services.app import runtime\n"
        "runtime.started()\n"
        "frozen = gc.get_freeze_count()\n"
        "class Node: pass\n"
        "a, b = Node(), Node()\n"
        "a.other, b.other = b, a\n"
        "gone = weakref.ref(a)\n"
        "del a, b\n"
        "gc.collect()\n"
        "sys.stderr.write(f'{frozen} {gone() is None}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    frozen, collected = done.stderr.split()[-2:]
    assert int(frozen) > 50_000 and collected == "True"

"""A full event log (services/eventlog/log.py, ``storage_full``): when JetStream's storage (the
server's ``max_file_store``) or the stream's limits are used up, the intake answers
``unavailable`` saying so and what to do, writes nothing of the batch, and takes the same
message once space returns (a purge of what filled the store, or a limit raised by a reload)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from services.app.embedded import EmbeddedNats
from services.app.wiring import intake as run_intake
from tests.conftest import TEST_SECRET_KEY, cloudevent, connect, plan_project, request
from tests.faults_support import lost_and_duplicated

STORE = 1024 * 1024  # the server's JetStream storage: small, so that it fills in a moment


@pytest.fixture
def small_server(tmp_path: Path, identity):
    server = EmbeddedNats(tmp_path / "nats", identity=identity, max_file_store=STORE).start()
    yield server
    server.stop()


def work(project: str, n: int) -> list[dict]:
    """One batch: a task added and completed, a status report (all or nothing)."""
    ids = {"project_id": project, "milestone_id": "m1"}
    return [
        cloudevent("TaskAdded", {**ids, "task_id": f"x{n}", "title": f"x{n}"}),
        cloudevent("TaskCompleted", {**ids, "task_id": f"x{n}"}),
        cloudevent("StatusReported", {"project_id": project, "health": "on_track", "note": "n"}),
    ]


async def fill(nc, stream: str = "BALLAST") -> int:
    """Publish into a stream of its own until JetStream refuses: the store is full."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[stream.lower()]))
    for n in range(10_000):
        try:
            await js.publish(stream.lower(), b"x" * 8192)
        except APIError:
            return n
    raise AssertionError("the store never filled")


async def refused_as_full(nc, batch: list[dict]) -> str:
    """The batch is refused as ``unavailable`` naming the full storage; nothing of it written."""
    before = (await nc.jetstream().stream_info("MILESTONES")).state
    reply = await request(nc, batch)
    assert not reply.accepted and reply.error.code == "unavailable", reply
    message = reply.error.message
    assert message.startswith("the event log's storage is full"), message
    assert "nothing was written" in message
    after = (await nc.jetstream().stream_info("MILESTONES")).state
    assert (after.messages, after.last_seq) == (before.messages, before.last_seq)
    return message


async def test_a_full_store_refuses_whole_batches_and_recovers(small_server, tmp_path, identity):
    from tests.conftest import service_settings

    settings = service_settings(
        small_server,
        data_dir=str(tmp_path),
        scheduler=False,
        secret_key=TEST_SECRET_KEY,
        append_attempts=3,
    )
    async with run_intake(settings):
        nc = await connect(small_server)
        try:
            acked: dict[str, int] = {}
            reply = await request(nc, plan_project("p", "m1", tasks=("t1",)))
            assert reply.accepted, reply
            acked |= {e.id: e.position for e in reply.events or []}

            # the server's storage full: a purge of what filled it brings the log back
            await fill(nc)
            batch = work("p", 1)
            message = await refused_as_full(nc, batch)
            assert "max_file_store" in message
            await nc.jetstream().purge_stream("BALLAST")
            reply = await request(nc, batch)  # the same message, sent again: taken once
            assert reply.accepted, reply
            acked |= {e.id: e.position for e in reply.events or []}

            # full again: this time the limit is raised by a configuration reload
            await nc.jetstream().delete_stream("BALLAST")
            await fill(nc)
            batch = work("p", 2)
            await refused_as_full(nc, batch)
            small_server.max_file_store = STORE * 4
            await asyncio.to_thread(small_server.reload)
            reply = await request(nc, batch)
            assert reply.accepted, reply
            acked |= {e.id: e.position for e in reply.events or []}

            # the stream's own limit reached (an operator lowered it): refused, then restored
            js = nc.jetstream()
            config = (await js.stream_info("MILESTONES")).config
            count = (await js.stream_info("MILESTONES")).state.messages
            config.max_msgs = count
            await js.update_stream(config)
            batch = work("p", 3)
            message = await refused_as_full(nc, batch)
            assert "maximum messages exceeded" in message and "nats stream edit" in message
            config.max_msgs = -1
            await js.update_stream(config)
            reply = await request(nc, batch)
            assert reply.accepted, reply
            acked |= {e.id: e.position for e in reply.events or []}

            assert await lost_and_duplicated(nc, acked) == (0, 0)
        finally:
            await nc.close()


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 4 MiB filesystem of its own (tmpfs; needs root, skipped where mounting is refused)."""
    import shutil
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_small_disk_fills_and_the_log_says_so(tiny_disk: Path, tmp_path, identity):
    """No max_file_store: nats-server takes 75 % of the disk's free space as its limit at
    start, so a filling disk is refused by JetStream (not by ENOSPC, which would stop it)."""
    from tests.conftest import service_settings

    server = EmbeddedNats(tiny_disk / "nats", identity=identity).start()
    try:
        settings = service_settings(
            server,
            data_dir=str(tmp_path),
            scheduler=False,
            secret_key=TEST_SECRET_KEY,
            append_attempts=3,
        )
        async with run_intake(settings):
            nc = await connect(server)
            try:
                reply = await request(nc, plan_project("p", "m1", tasks=("t1",)))
                assert reply.accepted, reply
                await fill(nc)
                batch = work("p", 1)
                await refused_as_full(nc, batch)
                await nc.jetstream().purge_stream("BALLAST")
                reply = await request(nc, batch)
                assert reply.accepted, reply
            finally:
                await nc.close()
    finally:
        server.stop()

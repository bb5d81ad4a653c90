"""The intake process and the nats-server killed with SIGKILL under load (issue 13, fault 5a),
with the projections running as a process of their own throughout.

The publishers here behave as the contract asks of them: a batch that got no answer, or
``unavailable``, is sent again with the same CloudEvent ids until it is accepted. So after any
number of crashes every batch must be in the log exactly once, at the positions its (last)
reply gave: nothing acknowledged lost, nothing appended twice; and the read models, caught up,
equal a rebuild."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import sys
import time

import msgspec
import nats
import pytest

from events import ENCODER, REPLY_DECODER
from services.app.embedded import EmbeddedNats
from services.eventlog.log import EventLog
from tests.conftest import cli_env, cloudevent, connect, wait_for
from tests.faults_support import (
    assert_equals_rebuild,
    projections_process,
    record,
    time_to_reach,
)

pytestmark = pytest.mark.faults

_LOOSE = msgspec.json.Decoder()


class ResendingLoad:
    """``senders`` publishers, each sending batches one after the other until stopped (a task
    added and completed, a status report) and resending a batch, same ids, until it is
    accepted."""

    def __init__(self, nc: nats.NATS, senders: int = 3) -> None:
        self.nc, self.senders = nc, senders
        self.stopping = asyncio.Event()
        self.acked: dict[str, int] = {}  # CloudEvent id -> position, from the accepting reply
        self.resent = 0
        self.accepted_at: list[float] = []  # monotonic time of every accepting reply
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> ResendingLoad:
        plan = [
            cloudevent("ProjectCreated", {"project_id": f"crash{s}", "name": "c"})
            for s in range(self.senders)
        ]
        plan += [
            cloudevent(
                "MilestonePlanned",
                {
                    "project_id": f"crash{s}",
                    "milestone_id": "m",
                    "name": "m",
                    "kind": "event",
                    "due": "2027-06-01",
                },
            )
            for s in range(self.senders)
        ]
        # a task that stays open: completing the others never achieves the milestone
        plan += [
            cloudevent(
                "TaskAdded",
                {"project_id": f"crash{s}", "milestone_id": "m", "task_id": "open", "title": "o"},
            )
            for s in range(self.senders)
        ]
        await self._until_accepted(ENCODER.encode(plan))
        self.tasks = [asyncio.create_task(self._send(s)) for s in range(self.senders)]
        return self

    async def _send(self, sender: int) -> None:
        p = f"crash{sender}"
        n = 0
        while not self.stopping.is_set():
            n += 1
            t = f"t{n}"
            batch = [
                cloudevent(
                    "TaskAdded", {"project_id": p, "milestone_id": "m", "task_id": t, "title": t}
                ),
                cloudevent("TaskCompleted", {"project_id": p, "milestone_id": "m", "task_id": t}),
                cloudevent("StatusReported", {"project_id": p, "health": "on_track", "note": t}),
            ]
            await self._until_accepted(ENCODER.encode(batch))
            await asyncio.sleep(0.01)

    async def _until_accepted(self, body: bytes) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                msg = await self.nc.request("milestones.commands.batch", body, timeout=2)
                reply = REPLY_DECODER.decode(msg.data)
            except Exception:  # no responders, a timeout, a reconnecting client: send it again
                reply = None
            if reply is not None and reply.accepted:
                self.acked.update({e.id: e.position for e in reply.events or []})
                self.accepted_at.append(time.monotonic())
                return
            if reply is not None and reply.error is not None:
                assert reply.error.code == "unavailable", reply.error  # only outages are retried
            assert time.monotonic() < deadline, "a batch was not accepted within 60 s"
            self.resent += 1
            await asyncio.sleep(0.05)

    def accepted_since(self, moment: float) -> bool:
        return any(t > moment for t in self.accepted_at)

    async def stop(self) -> None:
        """Stop after the batches in flight are accepted."""
        self.stopping.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 90)


async def exactly_once(nc: nats.NATS, acked: dict[str, int]) -> tuple[int, int]:
    """(lost, duplicated): acknowledged ids not in the log at their position, ids in it twice."""
    seen: collections.Counter[str] = collections.Counter()
    at: dict[str, int] = {}
    for m in await EventLog(nc).read_subject("milestones.events.>"):
        body = _LOOSE.decode(m.data)
        seen[body["id"]] += 1
        at[body["id"]] = m.seq
    lost = sum(1 for i, pos in acked.items() if seen[i] == 0 or at[i] != pos)
    duplicated = sum(1 for n in seen.values() if n > 1)
    return lost, duplicated


async def intake_process(settings) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        **cli_env(settings),
        "MILESTONES_SCHEDULER": "false",
        "MILESTONES_OPS_PORT": "0",
        "MILESTONES_LOG_FORMAT": "json",
        "MILESTONES_LOG_LEVEL": "warning",
        "MILESTONES_DATA_DIR": settings.data_dir,
    }
    with open(os.path.join(settings.data_dir, "intake.log"), "ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            "intake",
            "--no-http",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )


async def test_the_intake_killed_under_load_loses_and_doubles_nothing(
    settings, nc, db_url, tmp_path
):
    rng = random.Random(5)
    projections = await projections_process(settings, db_url, tmp_path / "projections.log")
    proc = await intake_process(settings)
    load = await ResendingLoad(nc).start()
    recoveries: list[float] = []
    try:
        for _ in range(4):
            mark = time.monotonic()
            await wait_for(lambda m=mark: _now(load.accepted_since(m)), 30, "the load to go on")
            await asyncio.sleep(rng.uniform(0.1, 0.8))  # at a random instant of its work
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            proc = await intake_process(settings)
            restarted = time.monotonic()
            await wait_for(lambda r=restarted: _now(load.accepted_since(r)), 30, "a restart")
            recoveries.append(min(t for t in load.accepted_at if t > restarted) - restarted)
        await load.stop()
        lost, duplicated = await exactly_once(nc, load.acked)
        await caught_up_and_equal_to_a_rebuild(db_url, nc)
    finally:
        load.stopping.set()
        for p in (proc, projections):
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await p.wait()
    report(
        "intake process killed with SIGKILL under load, restarted",
        load,
        recoveries,
        lost,
        duplicated,
    )


async def test_the_nats_server_killed_under_load_loses_and_doubles_nothing(
    nats_server: EmbeddedNats, intake, settings, db_url, tmp_path
):
    """Every write is fsynced before it is acknowledged (sync_interval: always), so a killed
    server restarted on its store has every acknowledged event; the intake and the publishers
    reconnect by themselves."""
    rng = random.Random(7)
    client = await connect(nats_server)
    projections = await projections_process(settings, db_url, tmp_path / "projections.log")
    load = await ResendingLoad(client).start()
    recoveries: list[float] = []
    try:
        for _ in range(3):
            mark = time.monotonic()
            await wait_for(lambda m=mark: _now(load.accepted_since(m)), 30, "the load to go on")
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            await asyncio.to_thread(nats_server.kill)
            await asyncio.to_thread(nats_server.start)  # same port, same store
            restarted = time.monotonic()
            await wait_for(lambda r=restarted: _now(load.accepted_since(r)), 45, "a restart")
            recoveries.append(min(t for t in load.accepted_at if t > restarted) - restarted)
        await load.stop()
        lost, duplicated = await exactly_once(client, load.acked)
        await caught_up_and_equal_to_a_rebuild(db_url, client)
    finally:
        load.stopping.set()
        if projections.returncode is None:
            projections.send_signal(signal.SIGTERM)
            await projections.wait()
        await client.close()
    report(
        "nats-server killed with SIGKILL under load, restarted on its store",
        load,
        recoveries,
        lost,
        duplicated,
    )


async def caught_up_and_equal_to_a_rebuild(db_url: str, nc: nats.NATS) -> None:
    """The projections (a process of their own, through every crash) reach the end of the log,
    and their read models equal a rebuild from position 1."""
    last = (await nc.jetstream().stream_info("MILESTONES")).state.last_seq
    await time_to_reach(db_url, last, 60)
    await assert_equals_rebuild(db_url, nc)


def report(
    fault: str, load: ResendingLoad, recoveries: list[float], lost: int, duplicated: int
) -> None:
    """Keep the figures for the README, then hold the run to them."""
    record(
        f"{fault}; publishers resend",
        runs=len(recoveries),
        acknowledged=len(load.acked),
        resent=load.resent,
        lost=lost,
        duplicated=duplicated,
        recover_s=[round(r, 2) for r in recoveries],
    )
    assert (lost, duplicated) == (0, 0)
    assert load.resent > 0  # the kills did interrupt the load


async def _now(value: bool) -> bool:
    return value

"""Helpers shared by tests/test_backup.py and tests/test_cluster.py: the CLI as a process, a
stream read whole, and a log worth backing up."""

from __future__ import annotations

import asyncio
import os
import sys

from services.eventlog.log import direct_batch
from tests.conftest import cloudevent, plan_project, request, wait_for


async def milestones(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    """``milestones ARGV`` as a process: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, stdout.decode(), stderr.decode()


async def everything(nc, stream: str) -> list[tuple[int, str, bytes]]:
    """Every message of ``stream`` as (sequence, subject, bytes)."""
    out, start = [], 1
    while True:
        got = await direct_batch(nc, stream, {"seq": start, "batch": 1000}, 10.0)
        out += [(m.seq, m.subject, m.data) for m in got]
        if len(got) < 1000:
            return out
        start = got[-1].seq + 1


async def a_log_worth_keeping(nc) -> None:
    """Projects through the intake (three, with a task done each) and one refused inbox message."""
    for project in ("p1", "p2", "p3"):
        for ce in plan_project(project, "m1", tasks=("t1", "t2", "t3")):
            assert (await request(nc, ce)).accepted
        done = {"project_id": project, "milestone_id": "m1", "task_id": "t1"}
        assert (await request(nc, cloudevent("TaskCompleted", done))).accepted
    await nc.jetstream().publish("milestones.inbox.TaskCompleted", b"not json at all")

    async def rejected() -> bool:
        return (await nc.jetstream().stream_info("MILESTONES_REJECTIONS")).state.messages >= 1

    await wait_for(rejected, what="the inbox message's rejection")

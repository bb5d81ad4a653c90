"""The command line against real servers: send, rejections, schema, and `milestones dev` itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from services.app.embedded import free_port
from tests.conftest import cli_env, wait_for

MILESTONES = [sys.executable, "-m", "services.cli"]


async def run(
    *args: str, env: dict | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *MILESTONES,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_send_prints_replies_and_exit_codes_tell_the_outcome(intake, settings):
    env = cli_env(settings)
    assert (
        await run("send", "--json", "ProjectCreated", "project_id=apollo", "name=Apollo", env=env)
    )[0] == 0
    code, out, _ = await run(
        "send",
        "--json",
        "MilestonePlanned",
        "project_id=apollo",
        "milestone_id=m1",
        "name=Design",
        "kind=event",
        "due=2026-12-01",
        "order=2",
        env=env,
    )
    assert code == 0 and json.loads(out)["events"][0]["type"] == "MilestonePlanned"
    await run(
        "send",
        "--json",
        "TaskAdded",
        "project_id=apollo",
        "milestone_id=m1",
        "task_id=t1",
        "title=Draw",
        env=env,
    )
    code, first, _ = await run(
        "send",
        "--json",
        "TaskCompleted",
        "project_id=apollo",
        "milestone_id=m1",
        "task_id=t1",
        "--id",
        "cli-1",
        env=env,
    )
    assert code == 0
    reply = json.loads(first)
    assert reply["accepted"] and [e["type"] for e in reply["events"]] == [
        "TaskCompleted",
        "MilestoneAchieved",
    ]
    assert all(e["position"] > 0 for e in reply["events"])
    code, again, _ = await run(
        "send",
        "--json",
        "TaskCompleted",
        "project_id=apollo",
        "milestone_id=m1",
        "task_id=t1",
        "--id",
        "cli-1",
        env=env,
    )
    assert code == 0 and json.loads(again) == reply
    code, out, _ = await run(
        "send",
        "--json",
        "TaskCompleted",
        "project_id=apollo",
        "milestone_id=m1",
        "task_id=zz",
        env=env,
    )
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found"


async def test_send_file_from_stdin_and_rejections(intake, settings):
    env = cli_env(settings)
    lines = [
        {
            "specversion": "1.0",
            "id": "f1",
            "source": "file",
            "type": "ProjectCreated",
            "time": "2026-11-01T00:00:00Z",
            "data": {"project_id": "f", "name": "From a file"},
        },
        {
            "specversion": "1.0",
            "id": "f2",
            "source": "file",
            "type": "MilestonePlanned",
            "time": "2026-11-01T00:00:00Z",
            "data": {
                "project_id": "f",
                "milestone_id": "m",
                "name": "M",
                "kind": "time",
                "due": "2027-01-31",
            },
        },
    ]
    stdin = "\n".join(json.dumps(x) for x in lines).encode()
    code, out, _ = await run("send", "--json", "--file", "-", env=env, stdin=stdin)
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = await run(
        "send",
        "--json",
        "--inbox",
        "TaskAdded",
        "project_id=f",
        "milestone_id=nope",
        "task_id=t",
        "title=x",
        env=env,
    )
    assert code == 0 and json.loads(out)["queued"]

    async def listed() -> bool:
        return "nope" in (await run("rejections", env=env))[1]

    await wait_for(listed, timeout=20, what="the rejection to be listed")
    code, out, _ = await run("rejections", "--json", env=env)
    assert json.loads(out.splitlines()[0])["code"] == "not_found"


async def test_schema_writes_json_schema_and_asyncapi(tmp_path: Path):
    code, out, _ = await run("schema", "--out", str(tmp_path))
    assert code == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "TaskCompleted.json",
        "MilestoneRescheduled.json",
        "CloudEvent.json",
        "asyncapi.json",
    } <= names
    schema = json.loads((tmp_path / "MilestoneRescheduled.json").read_text())["$defs"][
        "MilestoneRescheduled"
    ]
    assert set(schema["required"]) == {"project_id", "milestone_id", "new_due", "reason"}
    asyncapi = json.loads((tmp_path / "asyncapi.json").read_text())
    assert asyncapi["asyncapi"] == "3.0.0"  # checked whole by tests/test_asyncapi.py
    assert asyncapi["channels"]["commands"]["address"] == "milestones.commands.{type}"


async def test_dev_runs_everything_and_stops_on_ctrl_c(tmp_path: Path):
    """The default path: embedded nats-server and embedded PostgreSQL, nothing given."""
    nats_port, http_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        *MILESTONES,
        "dev",
        "--nats-port",
        str(nats_port),
        "--http-port",
        str(http_port),
        "--data-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
        | {"MILESTONES_LOG_FORMAT": "json"},
    )
    seen: list[dict] = []
    try:

        async def ready() -> bool:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if line.startswith(b"{"):
                seen.append(json.loads(line))
            return any(e.get("event") == "http listening" for e in seen)

        await wait_for(ready, timeout=60, what="milestones dev to listen")
        # the quick start: the CLI finds dev.json in the data dir, nothing else is given
        env = {"MILESTONES_DATA_DIR": str(tmp_path)}
        code, out, _ = await run(
            "send", "--json", "ProjectCreated", "project_id=dev", "name=Dev", env=env
        )
        assert code == 0 and json.loads(out)["accepted"]
        assert (tmp_path / "dev.json").stat().st_mode & 0o777 == 0o600
        dev = json.loads((tmp_path / "dev.json").read_text())
        assert set(dev["credentials"]) == {"publisher", "reader", "auditor", "admin"}
        code, out, _ = await run("projects", "--json", env=env)
        assert code == 0 and "dev" in out
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(f"nats://127.0.0.1:{nats_port}", allow_reconnect=False)
        service = json.loads((tmp_path / "identity" / "service.json").read_text())["service"]
        nc = await nats.connect(
            f"nats://127.0.0.1:{nats_port}", user=service["user"], password=service["password"]
        )
        info = await nc.jetstream().stream_info("MILESTONES")
        await nc.close()
        assert info.config.allow_atomic and info.config.deny_delete and info.config.deny_purge
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert b"stopped cleanly" in rest
        assert any(e.get("event") == "postgres started" for e in seen)
        assert "sync_interval: always" in (tmp_path / "nats" / "nats-server.conf").read_text()
        assert (
            subprocess.run(["pgrep", "-f", str(tmp_path / "nats")], capture_output=True).returncode
            == 1
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_configuration_is_one_clear_line():
    for env, says in (
        ({"MILESTONES_SCHEDULER": "maybe"}, "MILESTONES_SCHEDULER must be true or false"),
        ({"MILESTONES_HTTP_PORT": "eighty"}, "MILESTONES_HTTP_PORT must be a whole number"),
        ({"MILESTONES_QUERY_MEMO_CHARS": "-1"}, "MILESTONES_QUERY_MEMO_CHARS must be 0 or more"),
    ):
        code, out, err = await run("projections", env=env)
        assert code == 2 and says in err and "Traceback" not in err and err.count("\n") == 1

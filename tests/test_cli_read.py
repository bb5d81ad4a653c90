"""Every read command of the CLI against a real query service holding the demo project: its
table (fits 100 columns, no escape codes when not a terminal) and its ``--json``; errors in the
CLI's own option names."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from events import ENCODER
from services.app import demo
from services.app.embedded import EmbeddedNats
from services.app.settings import Settings
from services.auth.identity import ServiceIdentity
from services.cli import read
from services.cli.main import build_parser, failed
from services.query.text import TERMINAL, Terminal
from tests.conftest import (
    TEST_SECRET_KEY,
    TODAY,
    caught_up,
    cloudevent,
    service_settings,
    template_name,
    with_database,
)

ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, identity: ServiceIdentity, database_url: str
) -> AsyncIterator[Settings]:
    """Intake, projections and queries with the demo project loaded (one for the module: every
    command reads the same data)."""
    from services.app.wiring import running

    tmp = tmp_path_factory.mktemp("cli-read")
    server = EmbeddedNats(tmp / "nats", identity=identity).start()
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name(database_url)}"')
    await admin.close()
    db = with_database(database_url, name)
    settings = service_settings(
        server,
        data_dir=str(tmp),
        scheduler=False,
        webhook_allow_hosts="127.0.0.1",
        secret_key=TEST_SECRET_KEY,
        database_url=db,
    )
    try:
        async with running(settings, intake=True, projections=True, query=True) as run:
            run.queries.today = lambda: TODAY
            await demo.load(run.intake, TODAY)
            subscribed = cloudevent(
                "StakeholderSubscribed",
                {
                    "project_id": demo.PROJECT,
                    "stakeholder": "sponsor",
                    "url": "http://127.0.0.1:9/hook",
                },
                source=demo.SOURCE,
            )
            reply = await run.intake.handle(ENCODER.encode(subscribed), "tests")
            assert reply.accepted, reply
            last = max(e.position for e in reply.events or [])
            await caught_up(db, last, ("status", "history", "audit"))
            yield settings
    finally:
        server.stop()
        admin = await asyncpg.connect(database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def cli(capsys, settings: Settings, *argv: str) -> tuple[int, str, str]:
    """A read command as `milestones` runs it (parser, query over NATS, the error boundary),
    in this process: stdout is not a terminal, 100 columns."""
    args = build_parser().parse_args(list(argv))
    token = TERMINAL.set(Terminal(width=100, color=False))
    try:
        code = await read.run(args, settings)
    except Exception as exc:
        code = failed(exc)
        if code is None:
            raise
    finally:
        TERMINAL.reset(token)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# every read command, with what its table must show and what its JSON must hold
COMMANDS: dict[str, tuple[list[str], list[str], str]] = {
    "status": (["status", "atlas"], ["MILESTONE_ID", "HEALTH", "kickoff", "design"], "data"),
    "status one": (["status", "atlas", "design"], ["design", "Design frozen"], "data"),
    "history": (["history", "design", "--project", "atlas"], ["NEW_DUE", "Rescheduled"], "data"),
    "audit": (["audit", "--project", "atlas", "--limit", "5"], ["ProjectCreated"], "data"),
    "report": (["report", "atlas"], ["MILESTONE_ID", "kickoff", "baseline approved plan"], "data"),
    "trend": (["trend", "atlas"], ["MILESTONE_ID", "kickoff", "design"], "data"),
    "critical-path": (
        ["critical-path", "atlas"],
        ["MILESTONE_ID", "FLOAT_DAYS", "critical chain:", "project float"],
        "data",
    ),
    "digest": (["digest", "atlas", "--preview"], ["atlas"], "data"),
    "deliveries": (["deliveries"], ["STAKEHOLDER", "STATUS"], "data"),
    "projects": (["projects"], ["PROJECT_ID", "atlas"], "data"),
    "subscriptions": (["subscriptions", "atlas"], ["STAKEHOLDER", "sponsor"], "data"),
    "reports": (["reports", "atlas"], ["HEALTH", "NOTE", "at_risk"], "data"),
    "projections": (["projections"], ["PROJECTION", "status", "history", "audit"], ""),
    "parked": (["parked"], ["PROJECTION", "ERROR"], ""),
}


def test_every_read_command_is_covered():
    assert {argv[0] for argv, _, _ in COMMANDS.values()} == set(read.COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
async def test_a_read_command_prints_a_table_and_json(name, stack, capsys):
    argv, shows, key = COMMANDS[name]
    code, out, err = await cli(capsys, stack, *argv)
    assert code == 0, err
    assert err == ""
    for word in shows:
        assert word in out, f"{word!r} not in the table of {argv}:\n{out}"
    assert not ANSI.search(out)
    assert max(len(line) for line in out.splitlines()) <= 100, out
    code, out, err = await cli(capsys, stack, *argv, "--json")
    assert code == 0, err
    answer = json.loads(out)
    if key:
        assert key in answer and "position" in answer
    else:
        assert isinstance(answer, list | dict)


async def test_trend_prints_a_row_per_milestone_and_a_column_per_report_date(stack, capsys):
    code, out, _ = await cli(capsys, stack, "trend", "atlas", "--json")
    trend = json.loads(out)["data"]
    code, table, _ = await cli(capsys, stack, "trend", "atlas")
    assert code == 0
    lines = table.splitlines()
    header = lines[0].split()
    dates = trend["report_dates"]
    # the latest report dates that fit 100 columns, the last one last; a note counts the rest
    assert header[0] == "MILESTONE_ID" and header[-1] == dates[-1] and len(header) > 2
    assert header[1:] == dates[-(len(header) - 1) :]
    left_out = len(dates) - (len(header) - 1)
    assert (f"({left_out} earlier report date(s) left out" in table) == (left_out > 0)
    rows = [line.split() for line in lines[1:] if line[:1].strip() and line[0] != "("]
    assert [r[0] for r in rows] == [s["milestone_id"] for s in trend["series"]]
    last = {
        s["milestone_id"]: {p[0]: p[1] for p in s["points"]}.get(dates[-1], "-")
        for s in trend["series"]
    }
    assert {r[0]: r[-1] for r in rows} == last


async def test_status_in_a_table_is_the_json_of_it(stack, capsys):
    _, out, _ = await cli(capsys, stack, "status", "atlas", "--json")
    rows = json.loads(out)["data"]
    _, table, _ = await cli(capsys, stack, "status", "atlas")
    shown = [line.split()[0] for line in table.splitlines()[1:] if line[:1].strip()]
    assert shown == [r["milestone_id"] for r in rows]


async def test_a_refused_parameter_is_named_as_the_cli_names_it(stack, capsys):
    code, _, err = await cli(capsys, stack, "status", "atlas", "--min-position", "-1")
    assert code == 1
    assert err.startswith("milestones: invalid: --min-position must be between 0")
    assert "min_position" not in err
    code, _, err = await cli(capsys, stack, "audit", "--since", "yesterday")
    assert code == 1 and "--since must be an RFC 3339 time" in err, err
    code, _, err = await cli(capsys, stack, "status", "no such project!")
    assert code == 1 and err.startswith("milestones: invalid: PROJECT must match"), err
    code, _, err = await cli(capsys, stack, "status", "atlas", "nope")
    assert code == 1 and "project_id" not in err and "min_position" not in err, err
    assert "--min-position" in err  # "(yet: pass --min-position to wait for a write)"
    code, _, err = await cli(capsys, stack, "status", "atlas", "--cursor", "garbage")
    assert code == 1 and err.startswith("milestones: invalid: --cursor is not one"), err
    assert "next_cursor" not in err


def test_flag_names_follow_the_query(tmp_path: Path):
    audit = next(q for q in read.COMMANDS["audit"])
    said = read.in_cli_words(audit, "from must be an RFC 3339 time, got 'x'")
    assert said == "--since must be an RFC 3339 time, got 'x'"
    said = read.in_cli_words(audit, "correlation_id must be text; pass min_position to wait")
    assert said == "--correlation-id must be text; pass --min-position to wait"
    assert msgspec  # used by the fixture's imports

"""The command line as a newcomer meets it: global options anywhere, one line and exit code 2
for a server that cannot be reached, readable `send` replies, `types`, help with examples,
completion, progress, tables for a 100-column pipe or a colour terminal."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from events import ENCODER
from projections import PROJECTIONS
from projections.rebuild import rebuild, replay_parked
from services.app.embedded import free_port
from services.cli.docs import subparsers
from services.cli.main import build_parser
from tests.conftest import caught_up, cli_env, cloudevent, plan_project, request
from tests.test_cli import run

UNREACHABLE = {"MILESTONES_NATS_USER": "someone", "MILESTONES_NATS_PASSWORD": "secret"}


# -- global options ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["status", "apollo", "--nats-url", "nats://x:1"],
        ["--nats-url", "nats://x:1", "status", "apollo"],
        ["send", "ProjectCreated", "project_id=a", "--nats-url", "nats://x:1"],
        ["audit", "export", "--out", "f", "--nats-url", "nats://x:1"],
        ["credentials", "list", "--nats-url", "nats://x:1"],
    ],
)
def test_global_options_are_accepted_before_and_after_the_command(argv):
    args = build_parser().parse_args([*argv, "--data-dir", "/d"])
    assert args.nats_url == "nats://x:1" and args.data_dir == "/d"
    args = build_parser().parse_args(["--data-dir", "/d", *argv])
    assert args.nats_url == "nats://x:1" and args.data_dir == "/d"
    assert build_parser().parse_args(["projects"]).nats_url is None


# -- a server that cannot be reached -------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["status", "apollo"],
        ["trend", "apollo", "--json"],
        ["send", "ProjectCreated", "project_id=a", "name=A"],
        ["rejections"],
        ["credentials", "list"],
        ["audit", "verify", "--key", "AAAA"],
    ],
)
async def test_an_unreachable_nats_is_one_line_and_exit_code_2(argv, tmp_path: Path):
    url = f"nats://127.0.0.1:{free_port()}"
    env = {**UNREACHABLE, "MILESTONES_DATA_DIR": str(tmp_path)}
    code, out, err = await run(*argv, "--nats-url", url, env=env)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("milestones: ") and out == ""
    if argv[0] != "audit":  # verify refuses the key first, in one line too
        assert f"cannot reach NATS at {url} (connection refused)" in err, err
        assert "is `milestones dev` running?" in err and f"no {tmp_path / 'dev.json'}" in err


async def test_the_url_from_dev_json_is_named_when_dev_is_gone(tmp_path: Path):
    url = f"nats://127.0.0.1:{free_port()}"
    (tmp_path / "dev.json").write_text(
        json.dumps({"nats_url": url, "http_url": "http://127.0.0.1:1", "credentials": {}})
    )
    code, _, err = await run("projects", env={**UNREACHABLE, "MILESTONES_DATA_DIR": str(tmp_path)})
    assert code == 2 and err.count("\n") == 1, err
    assert f"cannot reach NATS at {url}" in err and f"from {tmp_path / 'dev.json'}" in err


async def test_no_service_answering_names_the_service(intake, settings):
    env = cli_env(settings)  # the intake runs there; no query service does
    code, _, err = await run("status", "apollo", env=env)
    assert code == 2 and err.count("\n") == 1, err
    assert "no query service answers on milestones.query.milestones" in err
    assert "milestones serve query" in err


# -- send ----------------------------------------------------------------------------------------
async def test_send_says_what_was_stored_where_and_refusals_in_one_line(intake, settings):
    env = cli_env(settings)
    code, out, err = await run("send", "ProjectCreated", "project_id=ux", "name=UX", env=env)
    assert code == 0 and err == ""
    assert out.startswith("accepted ProjectCreated at position ")
    assert out.rstrip().endswith("on milestones.events.ux")
    code, out, err = await run(
        "send", "TaskCompleted", "project_id=ux", "milestone_id=m1", "task_id=t", env=env
    )
    assert code == 1 and out == ""
    assert err.startswith("milestones: refused (not_found): "), err
    code, out, err = await run("send", "TaskCompleted", "project_id=ux", env=env)
    assert code == 1 and err.count("\n") == 1
    # no uuid the user never chose; every missing field at once
    assert err.startswith("milestones: refused (invalid): TaskCompleted data is not valid"), err
    assert "`milestone_id`, `task_id`" in err
    code, out, _ = await run("send", "TaskCompleted", "project_id=ux", "--json", env=env)
    assert code == 1 and json.loads(out)["error"]["code"] == "invalid"
    code, _, err = await run("send", "Nonsense", "a=b", env=env)
    assert code == 2 and "`milestones types`" in err and err.count("\n") == 1


async def test_every_missing_field_is_named_at_once(http):
    """Through the intake (HTTP and NATS share the parser): the code stays ``invalid``."""
    ce = cloudevent("MilestonePlanned", {"project_id": "p"})
    response = await http.post("/events", content=ENCODER.encode(ce))
    error = response.json()["error"]
    assert error["code"] == "invalid"
    for field in ("milestone_id", "name", "kind", "due"):
        assert f"`{field}`" in error["message"], error["message"]
    assert "missing required fields" in error["message"]


# -- types and help ------------------------------------------------------------------------------
async def test_types_lists_every_type_with_its_fields():
    from events import INBOUND_TYPES

    code, out, _ = await run("types")
    assert code == 0
    for name in INBOUND_TYPES:
        assert f"\n{name}\n" in f"\n{out}"
    code, out, _ = await run("types", "TaskCompleted")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "TaskCompleted"
    fields = {line.split()[-2] if line.split()[0] == "*" else line.split()[0] for line in lines}
    assert "* task_id" in out and "* milestone_id" in out and "completed_at" in out
    assert not any(line.strip().startswith("* completed_at") for line in lines)
    assert fields
    code, out, _ = await run("types", "--json")
    planned = {f["name"]: f for f in json.loads(out)["MilestonePlanned"]}
    assert planned["due"]["required"] and not planned["phase"]["required"]
    assert planned["kind"]["takes"] == "one of event|technical|time"
    code, out, _ = await run("send", "--help")
    assert "milestones types TYPE" in out and "examples:" in out
    listed = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:2] == "  "}
    assert listed["TaskCompleted"] == [
        "*project_id",
        "*milestone_id",
        "*task_id",
        "completed_at",
        "result",
    ]


def test_every_subcommand_has_a_description_an_example_and_help_on_every_flag():
    for path, parser, _ in subparsers(build_parser()):
        assert parser.description, path
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert parser.epilog and "examples:" in parser.epilog, path
        for action in parser._actions:
            assert action.help or isinstance(action, argparse._HelpAction), (path, action.dest)
    demo = next(
        a
        for a in build_parser()._subparsers._group_actions[0].choices["dev"]._actions
        if "--demo" in a.option_strings
    )
    assert "will open" not in demo.help and "log" in demo.help


# -- completion ----------------------------------------------------------------------------------
def complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell would offer for ``line``, as argcomplete's own tests ask it."""
    out = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "_ARGCOMPLETE_IFS": "\n",
    }
    script = "from services.cli.main import main; main()"
    subprocess.run([sys.executable, "-c", script], env=env, timeout=60, check=False)
    return [word.strip() for word in out.read_text().split("\n")]


def test_completion_offers_commands_and_flags(tmp_path: Path):
    assert "status" in complete("milestones sta", tmp_path)
    assert "--nats-url" in complete("milestones status apollo --na", tmp_path)
    code = subprocess.run(
        [sys.executable, "-m", "services.cli", "completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert code.returncode == 0 and "complete " in code.stdout and "milestones" in code.stdout
    assert "PYTHON_ARGCOMPLETE_OK" in Path("services/cli/main.py").read_text()[:200]


# -- terminal ------------------------------------------------------------------------------------
def test_a_terminal_gets_colour_a_pipe_plain_text(tmp_path: Path):
    from services.cli.output import terminal
    from services.query.text import TERMINAL, table

    rows = [{"a": "x" * 30, "b": "word " * 40}]
    piped = terminal(io.StringIO())
    assert piped.width == int(os.environ.get("COLUMNS", "100")) and not piped.color
    token = TERMINAL.set(piped)
    try:
        shown = table(rows, ["a", "b"])
    finally:
        TERMINAL.reset(token)
    assert "\x1b[" not in shown and max(map(len, shown.splitlines())) <= piped.width
    # a real terminal: bold headers, unless NO_COLOR
    code = "from services.cli.output import terminal; print(terminal())"
    for env, coloured in (({}, True), ({"NO_COLOR": "1"}, False)):
        leader, follower = pty.openpty()
        done = subprocess.run(
            [sys.executable, "-c", code],
            stdout=follower,
            env={**os.environ, "TERM": "xterm", **env},
            timeout=60,
            check=True,
        )
        os.close(follower)
        said = os.read(leader, 4096).decode()
        os.close(leader)
        assert done.returncode == 0 and f"color={coloured}" in said, said


async def test_piped_tables_fit_columns_without_escape_codes(intake, settings):
    env = {"COLUMNS": "60"}
    code, out, _ = await run("types", env=env)
    assert code == 0 and "\x1b[" not in out


# -- progress ------------------------------------------------------------------------------------
async def test_rebuild_and_replay_report_progress_up_to_the_end(system, nc, db_url, monkeypatch):
    for project in ("a", "b", "c"):
        for ce in plan_project(project, "m"):
            assert (await request(nc, ce)).accepted
    last = (await nc.jetstream().stream_info("MILESTONES")).state.last_seq
    await caught_up(db_url, 1, ("status",))
    seen: list[tuple[int, int]] = []
    position = await rebuild(
        PROJECTIONS["status"],
        db_url,
        nc,
        batch_size=2,
        on_progress=lambda d, t: seen.append((d, t)),
    )
    assert seen and seen[-1] == (position, position)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert all(d <= t for d, t in seen) and seen[0][1] == last
    # parked events replayed: progress per batch, in stream order, reaching the last one
    status = PROJECTIONS["status"]
    real_apply = status.apply

    async def buggy(conn, batch, schema):
        if any(getattr(e.data, "reason", None) == "vendor slip" for _, e in batch):
            raise ValueError("bug: cannot apply a vendor slip")
        await real_apply(conn, batch, schema)

    monkeypatch.setattr(status, "apply", buggy)
    slips = []
    for project in ("a", "b", "c"):
        ce = cloudevent(
            "MilestoneRescheduled",
            {
                "project_id": project,
                "milestone_id": "m",
                "new_due": "2027-02-01",
                "reason": "vendor slip",
            },
        )
        slips.append((await request(nc, ce)).events[-1].position)
    from projections.db import connect

    conn = await connect(db_url)
    try:

        async def parked() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM parked_events WHERE projection = 'status'"
            )
            return n == 3

        from tests.conftest import wait_for

        await wait_for(parked, timeout=30, what="three parked reschedules")
    finally:
        await conn.close()
    monkeypatch.setattr(status, "apply", real_apply)
    replayed: list[tuple[int, int]] = []
    assert await replay_parked(
        status, db_url, batch_size=1, on_progress=lambda d, t: replayed.append((d, t))
    ) == (3, 0)
    assert replayed == [(slips[0], slips[-1]), (slips[1], slips[-1]), (slips[2], slips[-1])]


async def test_rebuild_prints_a_summary_when_not_a_terminal(system, nc, db_url, settings):
    for ce in plan_project("s", "m"):
        assert (await request(nc, ce)).accepted
    env = {**cli_env(settings), "MILESTONES_DATABASE_URL": db_url}
    code, out, err = await run("rebuild", "status", env=env)
    assert code == 0, err
    assert "status: rebuilt to position" in out and "\r" not in err and "\x1b[" not in err

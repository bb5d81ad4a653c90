"""The query registry, without servers: every entry is whole, and HTTP (with its OpenAPI
document), NATS and the CLI are built from it; a bad parameter answers the contract's error JSON
naming the parameter, the same over HTTP and NATS."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from typing import Annotated, Any

import httpx
import msgspec
import pytest

from events.errors import Rejected
from services.app.http import build_http_app
from services.cli import read
from services.cli.main import build_parser
from services.query import text
from services.query.http_routes import query_routes
from services.query.nats_handlers import answer
from services.query.params import One, Params, Position, encode_cursor, parse, specs
from services.query.registry import BY_NAME, QUERIES, Cli, Query
from services.query.requests import (
    AuditParams,
    DeliveriesParams,
    DigestParams,
    HistoryParams,
    MilestonesParams,
    ProjectsParams,
    SubscriptionsParams,
)
from tests.conftest import MemoryAuthenticator, role_auth

NO_QUERIES: Any = object()  # a bad parameter is refused before any query runs


@pytest.fixture
async def client():
    app = build_http_app(
        None,
        max_body=64 * 1024,
        authenticator=MemoryAuthenticator(),
        extra_handlers=query_routes(NO_QUERIES),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", auth=role_auth()
    ) as c:
        yield c


# -- the registry --------------------------------------------------------------------------------
def test_every_entry_is_whole():
    assert len(BY_NAME) == len(QUERIES)
    assert len({(q.method, q.path) for q in QUERIES}) == len(QUERIES)
    for q in QUERIES:
        params = {s.name: s for s in specs(q.params)}
        assert q.subject == f"milestones.query.{q.name}"
        assert all(params[p].required for p in q.path_params), q.name
        assert q.formats[0] == "json" and (len(q.formats) > 1) == (q.export is not None), q.name
        assert q.export is None or q.export_columns, q.name
        assert all(n in params and not params[n].required for n in q.nats_only), q.name
        if q.cli is not None:
            assert set(q.cli.args) | set(q.cli.flags) <= set(params), q.name
            assert q.cli.when is None or q.cli.when.startswith("--") or q.cli.when in params
            assert q.cli.render is not None or q.cli.columns, q.name
    for command, group in read.COMMANDS.items():
        assert [q.cli.when is None for q in group if q.cli] == [True] + [False] * (
            len(group) - 1
        ), command


def test_every_name_path_and_role():
    served = {q.name: (q.method, q.path, q.role) for q in QUERIES}
    assert served == {
        "milestone": ("GET", "/milestones/{milestone_id}", "reader"),
        "milestones": ("GET", "/projects/{project_id}/milestones", "reader"),
        "history": ("GET", "/milestones/{milestone_id}/history", "reader"),
        "audit": ("GET", "/audit", "auditor"),
        "report": ("GET", "/projects/{project_id}/report", "reader"),
        "trend": ("GET", "/projects/{project_id}/trend", "reader"),
        "critical_path": ("GET", "/projects/{project_id}/critical-path", "reader"),
        "projects": ("GET", "/projects", "reader"),
        "project": ("GET", "/projects/{project_id}", "reader"),
        "status_reports": ("GET", "/projects/{project_id}/status-reports", "reader"),
        "subscriptions": ("GET", "/projects/{project_id}/subscriptions", "reader"),
        "digest": ("GET", "/projects/{project_id}/digest", "reader"),
        "digest_send": ("POST", "/projects/{project_id}/digest", "admin"),
        "deliveries": ("GET", "/deliveries", "admin"),
        "retry_delivery": ("POST", "/deliveries/{id}/retry", "admin"),
        "rejections": ("GET", "/rejections", "auditor"),
        "projections": ("GET", "/projections", "reader"),
        "parked": ("GET", "/parked", "admin"),
    }


# -- HTTP and its OpenAPI document ---------------------------------------------------------------
async def test_openapi_lists_every_parameter_with_its_type(client):
    doc = (await client.get("/schema/openapi.json")).json()
    listed = {
        name: {p["name"]: p for p in doc["paths"][q.path][q.method.lower()]["parameters"]}
        for name, q in BY_NAME.items()
    }
    milestones = listed["milestones"]
    assert milestones["limit"]["in"] == "query"
    assert milestones["limit"]["schema"] | {"default": None} == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": None,
    }
    assert milestones["due_from"]["schema"] == {"type": "string", "format": "date"}
    assert milestones["project_id"]["in"] == "path" and milestones["project_id"]["required"]
    assert milestones["project_id"]["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    health = milestones["health"]
    assert (health["schema"]["type"], health["style"], health["explode"]) == (
        "array",
        "form",
        False,
    )
    assert "missed" in health["schema"]["items"]["enum"]
    assert listed["audit"]["from"]["schema"]["format"] == "date-time"
    assert listed["audit"]["format"]["schema"]["enum"] == ["json", "jsonl", "csv"]
    assert listed["milestones"]["format"]["schema"]["enum"] == ["json", "csv"]
    assert listed["report"]["format"]["schema"]["enum"] == ["json", "csv"]
    assert listed["history"]["format"]["schema"]["enum"] == ["json"]
    assert {"record", "send"}.isdisjoint(listed["digest"])  # the GET route previews, always
    assert listed["history"]["cursor_position"]["schema"]["minimum"] == 0
    assert listed["audit"]["source"]["schema"]["maxLength"] == 512
    assert listed["subscriptions"]["limit"]["schema"]["default"] == 1000
    for name, q in BY_NAME.items():
        expected = {s.name for s in specs(q.params)} - set(q.nats_only) | {"format"}
        assert set(listed[name]) == expected, name
        operation = doc["paths"][q.path][q.method.lower()]
        assert operation["operationId"] == name and q.role in operation["description"]


BAD = [
    # HTTP path, query string, NATS name, NATS body, the message
    (
        "/projects/apollo/milestones",
        {"limit": "0"},
        "milestones",
        {"project_id": "apollo", "limit": 0},
        "limit must be between 1 and 1000, got 0",
    ),
    (
        "/projects/apollo/milestones",
        {"due_from": "soon"},
        "milestones",
        {"project_id": "apollo", "due_from": "soon"},
        "due_from must be a date YYYY-MM-DD, got 'soon'",
    ),
    (
        "/projects/apollo/milestones",
        {"health": "late,purple"},
        "milestones",
        {"project_id": "apollo", "health": ["late", "purple"]},
        "health accepts on_track, at_risk, late, missed, achieved, cancelled (comma-separated), "
        "not purple",
    ),
    (
        "/projects/apollo/milestones",
        {"sort": "color"},
        "milestones",
        {"project_id": "apollo", "sort": "color"},
        "sort must be one of order, -order, due, -due, name, -name, got 'color'",
    ),
    (
        "/milestones/design",
        {"min_position": "x"},
        "milestone",
        {"milestone_id": "design", "min_position": "x"},
        "min_position must be a whole number, got 'x'",
    ),
    (
        "/milestones/design",
        {"wait_ms": "60000"},
        "milestone",
        {"milestone_id": "design", "wait_ms": 60000},
        "wait_ms must be between 0 and 30000, got 60000",
    ),
    (
        "/audit",
        {"from": "yesterday"},
        "audit",
        {"from": "yesterday"},
        "from must be an RFC 3339 time, got 'yesterday'",
    ),
    (
        "/audit",
        {"actor": "a\x00b"},
        "audit",
        {"actor": "a\x00b"},
        "actor must be text of at most 256 characters without control characters, got 'a\\x00b'",
    ),
    (
        "/audit",
        {"source": "s" * 513},
        "audit",
        {"source": "s" * 513},
        f"source must be text of at most 512 characters without control characters, "
        f"got '{'s' * 513}'",
    ),
    (
        "/milestones/design/history",
        {"cursor_position": "-1"},
        "history",
        {"milestone_id": "design", "cursor_position": -1},
        "cursor_position must be between 0 and 9223372036854775807, got -1",
    ),
    (
        "/projects/moon.*/trend",
        {},
        "trend",
        {"project_id": "moon.*"},
        "project_id must match ^[A-Za-z0-9_-]{1,64}$, got 'moon.*'",
    ),
    (
        "/deliveries",
        {"status": "lost"},
        "deliveries",
        {"status": "lost"},
        "status accepts pending, delivered, failed (comma-separated), not lost",
    ),
    (
        "/projects/apollo/report",
        {"position": "-3"},
        "report",
        {"project_id": "apollo", "position": -3},
        "position must be between 0 and 9223372036854775807, got -3",
    ),
    (
        "/rejections",
        {"limt": "5"},
        "rejections",
        {"limt": 5},
        "unknown parameter 'limt': this query takes cursor, limit, min_position, wait_ms",
    ),
]


@pytest.mark.parametrize(("path", "query", "name", "body", "message"), BAD)
async def test_a_bad_parameter_answers_the_contract_error_over_http_and_nats(
    client, path, query, name, body, message
):
    refusal = {"accepted": False, "error": {"code": "invalid", "message": message}}
    r = await client.get(path, params=query)
    assert (r.status_code, r.json()) == (400, refusal)
    assert json.loads(await answer(NO_QUERIES, name, msgspec.json.encode(body))) == refusal


async def test_over_nats_an_unknown_name_or_a_body_that_is_not_an_object_is_refused():
    unknown = json.loads(await answer(NO_QUERIES, "nope", b"{}"))
    assert (
        unknown["error"]["code"] == "unknown_type" and "milestones" in unknown["error"]["message"]
    )
    for body in (b"[1]", b"{not json"):
        assert json.loads(await answer(NO_QUERIES, "audit", body))["error"]["code"] == "invalid"
    missing = json.loads(await answer(NO_QUERIES, "trend", b"{}"))
    assert missing["error"] == {"code": "invalid", "message": "project_id is required"}
    body = b'{"project_id": "apollo", "send": "maybe"}'  # send and record are NATS only
    maybe = json.loads(await answer(NO_QUERIES, "digest", body))
    assert maybe["error"] == {
        "code": "invalid",
        "message": "send must be true or false, got 'maybe'",
    }


async def test_an_export_format_is_checked_and_litestars_own_errors_keep_the_contract(client):
    r = await client.get("/audit", params={"format": "xml"})
    assert r.json()["error"]["message"] == "format must be json, jsonl, csv, got 'xml'"
    for path in ("/milestones/design/history", "/projects", "/projections"):
        r = await client.get(path, params={"format": "csv"})
        assert (r.status_code, r.json()["error"]) == (
            400,
            {"code": "invalid", "message": "format must be json, got 'csv'"},
        ), path
    r = await client.delete("/audit")
    assert r.status_code == 405 and r.json()["accepted"] is False


def test_parameters_read_query_strings_and_json_alike():
    p = parse(
        MilestonesParams,
        {"project_id": "a", "kind": ["time", "event,time"], "limit": "5", "due_to": ""},
    )
    assert (p.kind, p.limit, p.due_to, p.sort) == (("time", "event"), 5, None, "order")
    naive = parse(AuditParams, {"from": "2026-01-05T10:00:00", "to": "2026-01-06T00:00:00Z"})
    assert naive.occurred_from == dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    assert naive.occurred_to == dt.datetime(2026, 1, 6, tzinfo=dt.UTC)
    with pytest.raises(Rejected, match="limit is given 2 times: give it once"):
        parse(DeliveriesParams, {"limit": ["1", "2"]})


def test_what_the_queries_took_before_the_registry_they_take_again():
    # a JSON number with an integral value, as int() took it
    assert parse(MilestonesParams, {"project_id": "a", "limit": 5.0}).limit == 5
    for wrong in (5.5, float("inf"), float("nan"), True):
        with pytest.raises(Rejected, match="limit must be a whole number"):
            parse(MilestonesParams, {"project_id": "a", "limit": wrong})
    # a keyset cursor over a 200-character name of 4-byte characters
    cursor = encode_cursor(["\U0001f680" * 200, "m" * 64])
    assert len(cursor) > 1000 and parse(MilestonesParams, {"project_id": "a", "cursor": cursor})
    with pytest.raises(Rejected, match="cursor must be text of at most 4096"):
        parse(MilestonesParams, {"project_id": "a", "cursor": "c" * 4097})
    # the audit filters take what the CloudEvent contract takes
    longest = {"actor": "a" * 256, "source": "s" * 512, "correlation_id": "c" * 256}
    audit = parse(AuditParams, longest)
    assert (audit.actor, audit.source, audit.correlation_id) == tuple(longest.values())
    assert parse(SubscriptionsParams, {"project_id": "a"}).limit == 1000
    assert parse(HistoryParams, {"milestone_id": "m", "cursor_position": "7"}).cursor_position == 7
    assert parse(ProjectsParams, {"project_id": "apollo"}).project_id == "apollo"
    for raw, record, send in (
        ({}, False, False),
        ({"record": "yes"}, True, False),
        ({"send": True, "record": "0"}, False, True),
        ({"send": "1"}, False, True),
        ({"send": "TRUE"}, False, True),
    ):
        d = parse(DigestParams, {"project_id": "a", **raw})
        assert (d.record, d.send) == (record, send), raw


# -- the CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "name", "params"),
    [
        (["status", "apollo"], "milestones", {"project_id": "apollo"}),
        (
            ["status", "apollo", "design", "--min-position", "9"],
            "milestone",
            {"project_id": "apollo", "milestone_id": "design", "min_position": 9},
        ),
        (
            ["status", "apollo", "--health", "late", "--sort=-due", "--limit", "5"],
            "milestones",
            {"project_id": "apollo", "health": "late", "sort": "-due", "limit": 5},
        ),
        (
            ["history", "design", "--project", "apollo"],
            "history",
            {"milestone_id": "design", "project_id": "apollo"},
        ),
        (
            ["audit", "--since", "2026-01-01T00:00:00Z", "--correlation-id", "c1"],
            "audit",
            {"from": "2026-01-01T00:00:00Z", "correlation_id": "c1"},
        ),
        (
            ["report", "apollo", "--as-of", "2026-03-01", "--compare-position", "4"],
            "report",
            {"project_id": "apollo", "as_of": "2026-03-01", "compare_position": 4},
        ),
        (
            ["trend", "apollo", "--until", "2026-05-01"],
            "trend",
            {"project_id": "apollo", "until": "2026-05-01"},
        ),
        (["digest", "apollo"], "digest_send", {"project_id": "apollo"}),
        (["digest", "apollo", "--preview"], "digest", {"project_id": "apollo"}),
        (["deliveries", "--status", "failed"], "deliveries", {"status": "failed"}),
        (["deliveries", "--retry", "d1"], "retry_delivery", {"id": "d1"}),
        (["projects"], "projects", {}),
        (["projects", "apollo"], "projects", {"project_id": "apollo"}),
        (["subscriptions", "apollo"], "subscriptions", {"project_id": "apollo"}),
        (
            ["reports", "apollo", "--milestone", "m1"],
            "status_reports",
            {"project_id": "apollo", "milestone_id": "m1"},
        ),
        (["projections"], "projections", {}),
        (["parked", "status"], "parked", {"projection": "status"}),
    ],
)
def test_each_read_command_asks_its_query(argv, name, params):
    query, asked = read.chosen(build_parser().parse_args(argv))
    assert (query.name, asked) == (name, params)


def test_every_flag_the_read_commands_had_is_still_accepted():
    for argv in ("digest p --send true", "digest p --record true"):
        with pytest.raises(SystemExit):  # the CLI's digest sends, or --preview only shows it
            build_parser().parse_args(argv.split())
    for argv in (
        "status p --json --min-position 1 --cursor c --limit 2 --health late --kind time "
        "--sort due",
        "history m --project p --json --min-position 1 --cursor c --limit 2",
        "audit --project p --milestone m --actor a --source s --type T --correlation-id c "
        "--since 2026-01-01 --until 2026-02-01 --json --min-position 1 --cursor c --limit 2",
        "report p --as-of 2026-01-01 --position 3 --baseline b --compare-as-of 2026-01-01 "
        "--compare-position 2 --json",
        "trend p --until 2026-01-01 --json",
        "digest p --preview --json",
        "deliveries --project p --status failed --kind project.digest --retry d "
        "--json --min-position 1 --cursor c --limit 2",
        "projects p --json --min-position 1 --cursor c --limit 2",
        "subscriptions p --json --min-position 1 --cursor c --limit 2",
        "reports p --milestone m --json --min-position 1 --cursor c --limit 2",
        "projections --json",
        "parked status --json",
    ):
        build_parser().parse_args(argv.split())


def test_answers_as_text():
    trend = {
        "report_dates": ["2026-01-05", "2026-01-12"],
        "series": [{"milestone_id": "m2", "points": [["2026-01-05", "2026-04-01"]]}],
    }
    lines = text.trend(trend).splitlines()
    assert lines[0].split() == ["MILESTONE_ID", "2026-01-05", "2026-01-12"]
    assert lines[1].split() == ["m2", "2026-04-01", "-"]
    shown = text.table([{"a": None, "b": ["x", "y"]}], ["a", "b", "c"], {"c": lambda r: 3})
    assert shown.splitlines()[1].split() == ["-", "x;", "y", "3"]


# -- a new query is one entry --------------------------------------------------------------------
class EchoParams(Params, kw_only=True, frozen=True):
    project_id: str
    n: Annotated[int, msgspec.Meta(ge=1, le=9)] = 1
    at: Position | None = None


async def echo(queries: Any, p: EchoParams) -> One:
    return One({"project_id": p.project_id, "n": p.n, "at": p.at}, 7)


ECHO = Query(
    name="echo",
    params=EchoParams,
    handler=echo,
    method="GET",
    path="/echo/{project_id}",
    role="reader",
    response=One,
    summary="Says it back",
    cli=Cli(command="echo", help="says it back", args=("project_id",), columns=("n",)),
)


async def test_a_new_query_is_one_entry():
    app = build_http_app(
        None,
        max_body=1024,
        authenticator=MemoryAuthenticator(),
        extra_handlers=query_routes(NO_QUERIES, [ECHO]),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", auth=role_auth()
    ) as c:
        said = (await c.get("/echo/apollo", params={"n": "3"})).json()
        refused = (await c.get("/echo/apollo", params={"n": "10"})).json()
        documented = (await c.get("/schema/openapi.json")).json()["paths"]["/echo/{project_id}"]
    assert said == {"data": {"project_id": "apollo", "n": 3, "at": None}, "position": 7}
    assert refused["error"]["message"] == "n must be between 1 and 9, got 10"
    assert {p["name"] for p in documented["get"]["parameters"]} == {
        "project_id",
        "n",
        "at",
        "min_position",
        "wait_ms",
        "format",
    }
    over_nats = await answer(NO_QUERIES, "echo", b'{"project_id": "x", "n": 2}', {"echo": ECHO})
    assert json.loads(over_nats)["data"]["n"] == 2
    parser = argparse.ArgumentParser()
    commands = read.grouped([ECHO])
    read.add_command(parser.add_subparsers(dest="command"), "echo", commands["echo"])
    query, params = read.chosen(parser.parse_args(["echo", "p", "--n", "4"]), commands)
    assert (query, params) == (ECHO, {"project_id": "p", "n": 4})


def test_no_query_module_reads_a_read_model_table_itself():
    """Read-model SQL lives beside its read model (projections/*/queries.py)."""
    from pathlib import Path

    tables = r"\b(ms_status|ms_projects|ms_status_reports|ms_subscriptions|ms_history|"
    tables += r"audit_events|audit_rejections|checkpoints|parked_events)\b"
    for path in (Path(__file__).parent.parent / "services" / "query").glob("*.py"):
        sql = re.findall(r"(?:FROM|JOIN|UPDATE|INTO)\s+(\w+)", path.read_text())
        assert not [t for t in sql if re.fullmatch(tables, t)], path.name

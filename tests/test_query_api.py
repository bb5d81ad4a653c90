"""The query API over HTTP, NATS and the CLI, on live read models (real NATS and PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import re

from prometheus_client import REGISTRY

from events import ENCODER
from tests.conftest import TODAY, caught_up, cli_env, cloudevent, plan_project, request
from tests.test_cli import run


async def seed(nc) -> int:
    ces = plan_project("apollo", "design", tasks=("sketch", "review"), due="2026-12-01")
    ces += plan_project("apollo", "build", kind="technical", tasks=("ci",), due="2027-02-01")[1:]
    ces += [
        cloudevent(
            "TaskCompleted",
            {"project_id": "apollo", "milestone_id": "design", "task_id": "sketch"},
            actor="ada",
            correlationid="corr-1",
        ),
        cloudevent(
            "MilestoneRescheduled",
            {
                "project_id": "apollo",
                "milestone_id": "design",
                "new_due": "2026-12-15",
                "reason": "review board moved",
            },
            actor="ada",
        ),
    ]
    reply = await request(nc, ces)
    assert reply.accepted, reply
    return reply.events[-1].position


async def test_read_your_writes(api, nc):
    position = await seed(nc)
    r = await api.get("/milestones/design", params={"min_position": position})
    body = r.json()
    assert r.status_code == 200 and body["stale"] is False if "stale" in body else True
    assert body["position"] >= position
    row = body["data"]
    assert (row["due"], row["first_due"], row["reschedules"], row["progress"]) == (
        "2026-12-15",
        "2026-12-01",
        1,
        50,
    )
    assert row["health"] == "on_track" and row["health_reasons"] == [
        "due 2026-12-15 in 21 days, 50% of tasks done"
    ]
    stale = (
        await api.get("/milestones/design", params={"min_position": position + 1000, "wait_ms": 50})
    ).json()
    assert stale["stale"] is True and stale["data"]["milestone_id"] == "design"


def judged_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("milestones_query_judged_total", {"outcome": outcome}) or 0


async def test_a_project_judged_before_is_judged_again_after_a_write_and_on_a_new_day(
    api, nc, system
):
    """The query service keeps what it judged of a project while the project's rows, target,
    day and gap stay the same (``services.query.judged_memo``): a read after a write, or on
    another day, is judged from what it reads, never answered from the memo."""
    position = await seed(nc)
    path = "/milestones/design"
    first = (await api.get(path, params={"project_id": "apollo", "min_position": position})).json()
    hits, misses = judged_total("hit"), judged_total("miss")
    again = (await api.get(path, params={"project_id": "apollo"})).json()
    assert again["data"] == first["data"]
    assert (judged_total("hit"), judged_total("miss")) == (hits + 1, misses)
    # the project's milestones share it: the same verdict, no judgement of their own
    listed = (await api.get("/projects/apollo/milestones")).json()["data"]
    assert [m for m in listed if m["milestone_id"] == "design"] == [first["data"]]
    assert judged_total("miss") == misses

    done = await request(
        nc,
        [
            cloudevent(
                "TaskCompleted",
                {"project_id": "apollo", "milestone_id": "design", "task_id": "review"},
            )
        ],
    )
    assert done.accepted, done
    after = (
        await api.get(
            path, params={"project_id": "apollo", "min_position": done.events[-1].position}
        )
    ).json()["data"]
    assert judged_total("miss") == misses + 1
    assert (after["progress"], after["health"], after["health_reasons"]) == (
        100,
        "achieved",
        ["achieved 2026-11-24"],
    )

    build = "/milestones/build"
    before = (await api.get(build, params={"project_id": "apollo"})).json()["data"]
    assert judged_total("miss") == misses + 1  # judged with design's read just now
    system.queries.today = lambda: TODAY + dt.timedelta(days=7)
    later = (await api.get(build, params={"project_id": "apollo"})).json()["data"]
    assert judged_total("miss") == misses + 2
    days = [int(re.search(r"in (\d+) days", r["health_reasons"][-1])[1]) for r in (before, later)]
    assert days[0] - days[1] == 7, (before["health_reasons"], later["health_reasons"])


async def test_the_query_service_takes_the_memo_budget_it_is_given(settings, db_url):
    """``MILESTONES_QUERY_MEMO_CHARS`` reaches the running service's memo through the wiring
    (0: nothing kept, every read judged; the memo's own tests show what a budget does)."""
    import msgspec

    from services.app.wiring import running

    given = msgspec.structs.replace(settings, database_url=db_url, query_memo_chars=0)
    async with running(given, query=True) as run:
        assert run.queries is not None and run.queries.memo.budget == 0


async def test_project_milestones_filters_sort_and_pages(api, nc):
    position = await seed(nc)
    base = {"min_position": position}
    body = (await api.get("/projects/apollo/milestones", params=base)).json()
    assert [m["milestone_id"] for m in body["data"]] == ["build", "design"]  # order, then id
    by_due = (await api.get("/projects/apollo/milestones", params={**base, "sort": "-due"})).json()
    assert [m["milestone_id"] for m in by_due["data"]] == ["build", "design"]
    kind = (
        await api.get("/projects/apollo/milestones", params={**base, "kind": "technical"})
    ).json()
    assert [m["milestone_id"] for m in kind["data"]] == ["build"]
    window = (
        await api.get(
            "/projects/apollo/milestones",
            params={**base, "due_from": "2026-12-10", "due_to": "2026-12-31"},
        )
    ).json()
    assert [m["milestone_id"] for m in window["data"]] == ["design"]
    first = (await api.get("/projects/apollo/milestones", params={**base, "limit": 1})).json()
    second = (
        await api.get(
            "/projects/apollo/milestones",
            params={**base, "limit": 1, "cursor": first["next_cursor"]},
        )
    ).json()
    assert [first["data"][0]["milestone_id"], second["data"][0]["milestone_id"]] == [
        "build",
        "design",
    ]
    assert "next_cursor" not in second


async def test_history_and_audit(api, nc):
    position = await seed(nc)
    history = (
        await api.get("/milestones/design/history", params={"min_position": position})
    ).json()["data"]
    assert [(h["type"], h["old_due"], h["new_due"]) for h in history] == [
        ("MilestonePlanned", None, "2026-12-01"),
        ("MilestoneRescheduled", "2026-12-01", "2026-12-15"),
    ]
    assert history[1]["reason"] == "review board moved" and history[1]["actor"] == "ada"
    audit = (await api.get("/audit", params={"min_position": position, "actor": "ada"})).json()[
        "data"
    ]
    assert [a["type"] for a in audit] == ["TaskCompleted", "MilestoneRescheduled"]
    assert audit[0]["payload"]["task_id"] == "sketch" and audit[0]["correlation_id"] == "corr-1"
    by_corr = (await api.get("/audit", params={"correlation_id": "corr-1"})).json()["data"]
    assert [a["type"] for a in by_corr] == ["TaskCompleted"]
    everything = (await api.get("/audit", params={"project_id": "apollo"})).json()["data"]
    assert len(everything) == 8


async def test_audit_exports_stream_jsonl_and_csv(api, nc):
    position = await seed(nc)
    jsonl = await api.get(
        "/audit", params={"format": "jsonl", "project_id": "apollo", "min_position": position}
    )
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert jsonl.headers["content-type"].startswith("application/x-ndjson") and len(lines) == 8
    assert [x["position"] for x in lines] == sorted(x["position"] for x in lines)
    exported = await api.get("/audit", params={"format": "csv", "project_id": "apollo"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert (
        len(rows) == 8
        and rows[0]["type"] == "ProjectCreated"
        and json.loads(rows[0]["payload"])["name"] == "Project"
    )


async def test_unknown_ids_and_bad_filters(api, nc):
    await seed(nc)
    cases = [
        ("/milestones/nope", {}, 404, "not_found"),
        ("/milestones/nope/history", {}, 404, "not_found"),
        ("/projects/nope/milestones", {}, 404, "not_found"),
        ("/projects/apollo/milestones", {"health": "purple"}, 400, "invalid"),
        ("/projects/apollo/milestones", {"due_from": "soon"}, 400, "invalid"),
        ("/projects/apollo/milestones", {"sort": "color"}, 400, "invalid"),
        ("/projects/apollo/milestones", {"cursor": "!!!"}, 400, "invalid"),
        ("/projects/apollo/milestones", {"limit": "0"}, 400, "invalid"),
        ("/audit", {"from": "yesterday"}, 400, "invalid"),
        ("/audit", {"format": "xml"}, 400, "invalid"),
        ("/milestones/design", {"min_position": "x"}, 400, "invalid"),
    ]
    for path, params, status, code in cases:
        r = await api.get(path, params=params)
        assert r.status_code == status, (path, params, r.text)
        assert (
            r.json()["accepted"] is False
            and r.json()["error"]["code"] == code
            and r.json()["error"]["message"]
        )


async def test_queries_over_nats(system, nc):
    position = await seed(nc)
    msg = await nc.request(
        "milestones.query.milestone",
        ENCODER.encode({"milestone_id": "design", "min_position": position}),
        timeout=10,
    )
    assert json.loads(msg.data)["data"]["reschedules"] == 1
    msg = await nc.request(
        "milestones.query.milestones", ENCODER.encode({"project_id": "apollo"}), timeout=10
    )
    assert len(json.loads(msg.data)["data"]) == 2
    msg = await nc.request(
        "milestones.query.milestone", ENCODER.encode({"milestone_id": "zz"}), timeout=10
    )
    assert json.loads(msg.data)["error"]["code"] == "not_found"
    msg = await nc.request("milestones.query.nope", b"{}", timeout=10)
    assert json.loads(msg.data)["error"]["code"] == "unknown_type"
    msg = await nc.request("milestones.query.projections", b"", timeout=10)
    names = {p["projection"] for p in json.loads(msg.data)}
    assert {"status", "history", "audit", "rejections"} <= names


async def test_cli_read_commands(system, nc, settings):
    position = await seed(nc)
    env = cli_env(settings)
    code, out, _ = await run("status", "apollo", "--min-position", str(position), env=env)
    assert (
        code == 0
        and "design" in out
        and "on_track" in out
        and out.splitlines()[0].startswith("MILESTONE_ID")
    )
    code, out, _ = await run("status", "apollo", "design", "--json", env=env)
    assert code == 0 and json.loads(out)["data"]["milestone_id"] == "design"
    code, out, _ = await run("history", "design", env=env)
    assert code == 0 and "review board moved" in out
    code, out, _ = await run("audit", "--actor", "ada", "--json", env=env)
    assert code == 0 and len(json.loads(out)["data"]) == 2
    code, out, _ = await run("projections", env=env)
    assert code == 0 and "status" in out and "LAG" in out
    code, _, err = await run("status", "apollo", "nope", env=env)
    assert code == 1 and "not_found" in err
    await asyncio.sleep(0)


async def test_projects_goals_health_counts_next_milestone(api, nc, settings):
    goal = cloudevent(
        "ProjectCreated",
        {"project_id": "zeta", "name": "Zeta", "goals": ["ship v2", "halve churn"]},
    )
    position = await seed(nc)
    position = (await request(nc, goal)).events[-1].position
    body = (await api.get("/projects", params={"min_position": position})).json()
    assert [p["project_id"] for p in body["data"]] == ["apollo", "zeta"]
    apollo = (await api.get("/projects/apollo")).json()["data"]
    assert apollo["by_health"] == {"on_track": 2} and apollo["milestones"] == 2
    assert (
        apollo["next_milestone"]["milestone_id"] == "design"
        and apollo["expected_finish"] == "2027-02-01"
    )
    zeta = (await api.get("/projects/zeta")).json()["data"]
    assert zeta["goals"] == ["ship v2", "halve churn"] and zeta["next_milestone"] is None
    assert (await api.get("/projects/nobody")).status_code == 404
    code, out, _ = await run("projects", env=cli_env(settings))
    assert code == 0 and "ship v2" in out and "2 on_track" in out


async def test_dashboard_pages_answer_bad_input_with_a_page_that_says_what_to_fix(api, nc):
    position = await seed(nc)
    # the dashboard's pages take no min_position: wait on the projects read model through the
    # API (read-your-writes) before the projects list is asked for, as of a day or now
    known = (await api.get("/projects", params={"min_position": position})).json()
    assert [p["project_id"] for p in known["data"]] == ["apollo"]
    assert (await api.get("/ui")).status_code == 200
    cases = [
        ("/ui/projects/nope", {}, 404, "project nope is not known"),
        ("/ui/projects/apollo", {"as_of": "yesterday"}, 400, "as_of must be a date YYYY-MM-DD"),
        ("/ui/projects/apollo", {"baseline": "v9"}, 404, "has no baseline"),
        (
            "/ui/projects/apollo/milestones/zzz",
            {},
            404,
            "milestone zzz is not planned in project apollo",
        ),
        ("/ui/projects/apollo", {"as_of": "2020-01-01"}, 404, "did not exist yet on 2020-01-01"),
        ("/ui/audit", {"from_position": "x"}, 400, "from_position must be a whole number"),
        ("/ui/projects/bad%20id/trend", {}, 400, "project_id must match"),
        ("/ui/projects/nope/gantt.svg", {}, 404, "project nope is not known"),
    ]
    for path, params, status, text in cases:
        r = await api.get(path, params=params)
        assert (r.status_code, r.headers["content-type"].split(";")[0]) == (status, "text/html"), (
            path
        )
        assert text in r.text, (path, r.text[-300:])
    then = await api.get(
        "/ui", params={"as_of": "2026-11-24"}
    )  # folded from the log as it stood then
    assert then.status_code == 200 and "/ui/projects/apollo?as_of=2026-11-24" in then.text
    assert re.search(r"health-on_track[^>]*>on track</span> 2", then.text)
    before = await api.get("/ui", params={"as_of": "2020-01-01"})
    assert before.status_code == 200 and "No projects yet." in before.text
    page = await api.get("/ui/projects/apollo")
    assert page.status_code == 200 and 'class="bar" data-milestone="design"' in page.text


async def test_the_same_answer_over_http_and_nats(api, nc):
    position = await seed(nc)
    apollo = {"project_id": "apollo"}
    asked = [  # NATS name, HTTP path, the parameters not in the path
        ("project", "/projects/apollo", apollo, {}),
        ("milestones", "/projects/apollo/milestones", apollo, {"kind": "event"}),
        ("history", "/milestones/design/history", {"milestone_id": "design"}, {"limit": 1}),
        ("audit", "/audit", {}, {"actor": "ada", "to": "2030-01-01T00:00:00Z"}),
        ("status_reports", "/projects/apollo/status-reports", apollo, {}),
        ("subscriptions", "/projects/apollo/subscriptions", apollo, {}),
    ]
    for name, path, in_path, params in asked:
        params = {**params, "min_position": position}
        over_http = (await api.get(path, params=params)).json()
        reply = await nc.request(
            f"milestones.query.{name}", ENCODER.encode({**in_path, **params}), timeout=10
        )
        assert json.loads(reply.data) == over_http, name
        assert over_http["position"] >= position and "data" in over_http, name


async def test_the_csv_export_has_the_audit_columns(api, nc):
    from projections.audit import COLUMNS

    position = await seed(nc)
    exported = await api.get(
        "/audit", params={"format": "csv", "project_id": "apollo", "min_position": position}
    )
    header = next(csv.reader(io.StringIO(exported.text)))
    assert tuple(header) == COLUMNS and exported.headers["x-stale"] == "false"
    assert 'filename="audit.csv"' in exported.headers["content-disposition"]


# -- what the queries answered before the registry, they answer again ---------------------------
async def ask(nc, name: str, **params: object) -> dict:
    reply = await nc.request(f"milestones.query.{name}", ENCODER.encode(params), timeout=10)
    return json.loads(reply.data)


def projects_table_shows(out: str, page: dict) -> bool:
    """`milestones projects` as a table: the columns in order, a line per project with its
    figures (the table fits the terminal, so spacing is the printer's business)."""
    header, *lines = out.splitlines()
    assert header.split() == [
        "PROJECT_ID",
        "NAME",
        "MILESTONES",
        "BY_HEALTH",
        "NEXT",
        "EXPECTED_FINISH",
        "GOALS",
    ]
    assert len(lines) == len(page["data"])
    for line, p in zip(lines, page["data"], strict=True):
        words = line.split()
        assert words[0] == p["project_id"], line
        assert str(p["milestones"]) in words and str(p["expected_finish"] or "-") in words, line
    return True


async def test_projects_with_project_id_is_a_page_of_that_one(api, nc, settings):
    await seed(nc)
    goal = cloudevent("ProjectCreated", {"project_id": "zeta", "name": "Z", "goals": ["ship"]})
    position = (await request(nc, goal)).events[-1].position
    everything = (await api.get("/projects", params={"min_position": position})).json()
    assert [p["project_id"] for p in everything["data"]] == ["apollo", "zeta"]
    one = {"project_id": "zeta", "min_position": position}
    page = (await api.get("/projects", params=one)).json()
    assert [p["project_id"] for p in page["data"]] == ["zeta"] and "next_cursor" not in page
    assert page["data"][0] == everything["data"][1]
    assert await ask(nc, "projects", **one) == page
    unknown = await api.get("/projects", params={"project_id": "nobody"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert (await ask(nc, "projects", project_id="nobody"))["error"]["code"] == "not_found"
    env = cli_env(settings)
    code, out, _ = await run("projects", "apollo", "--json", env=env)
    answered = json.loads(out)
    assert code == 0 and [p["project_id"] for p in answered["data"]] == ["apollo"]
    code, out, _ = await run("projects", "apollo", env=env)
    assert code == 0 and projects_table_shows(out, answered)
    code, out, _ = await run("projects", env=env)
    assert code == 0 and projects_table_shows(out, everything)


async def test_digest_over_nats_records_or_sends_and_the_get_route_previews(api, nc, db_url):
    subscribe = cloudevent(
        "StakeholderSubscribed",
        {"project_id": "apollo", "stakeholder": "board", "url": "http://127.0.0.1:9/hook"},
    )
    reply = await request(nc, [*plan_project("apollo", "design"), subscribe])
    await caught_up(db_url, reply.events[-1].position)

    async def queued() -> int:
        params = {"project_id": "apollo", "kind": "project.digest"}
        return len((await api.get("/deliveries", params=params)).json()["data"])

    shown = await api.get("/projects/apollo/digest", params={"send": "true", "record": "yes"})
    assert shown.status_code == 200 and shown.json()["data"]["queued_deliveries"] == 0
    assert await queued() == 0
    assert (await ask(nc, "digest", project_id="apollo"))["data"]["digest"]["since_position"] == 0
    sent = (await ask(nc, "digest", project_id="apollo", send="true"))["data"]
    assert sent["queued_deliveries"] == 1 and await queued() == 1
    done = await request(
        nc,
        cloudevent(
            "TaskCompleted", {"project_id": "apollo", "milestone_id": "design", "task_id": "t1"}
        ),
    )
    await caught_up(db_url, done.events[-1].position)
    recorded = (await ask(nc, "digest", project_id="apollo", record=True))["data"]
    assert recorded["queued_deliveries"] == 0 and await queued() == 1
    assert recorded["digest"]["since_position"] == sent["digest"]["position"]
    assert [c["summary"] for c in recorded["digest"]["changes"]] == ["design: task t1 completed"]
    after = (await ask(nc, "digest", project_id="apollo"))["data"]["digest"]
    assert after["since_position"] == recorded["digest"]["position"] and after["changes"] == []


async def test_history_starts_after_cursor_position(api, nc):
    position = await seed(nc)
    params = {"min_position": position}
    both = (await api.get("/milestones/design/history", params=params)).json()["data"]
    assert [h["type"] for h in both] == ["MilestonePlanned", "MilestoneRescheduled"]
    params["cursor_position"] = both[0]["position"]
    rest = (await api.get("/milestones/design/history", params=params)).json()
    assert [h["type"] for h in rest["data"]] == ["MilestoneRescheduled"]
    assert await ask(nc, "history", milestone_id="design", **params) == rest
    params["cursor_position"] = both[1]["position"]
    past = await api.get("/milestones/design/history", params=params)
    assert (past.status_code, past.json()["data"]) == (200, [])  # past the end: an empty page


async def test_format_json_is_taken_by_every_route(api, nc):
    position = await seed(nc)
    for path in ("/projects/apollo/milestones", "/projects/apollo", "/milestones/design/history"):
        plain = await api.get(path, params={"min_position": position})
        as_json = await api.get(path, params={"min_position": position, "format": "json"})
        assert (as_json.status_code, as_json.json()) == (200, plain.json()), path
    refused = await api.get("/milestones/design/history", params={"format": "csv"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid")


async def test_audit_filters_take_what_the_contract_takes(api, nc):
    source, actor = "urn:" + "s" * 296, "a" * 256
    event = cloudevent(
        "ProjectCreated",
        {"project_id": "far", "name": "Far"},
        source=source,
        actor=actor,
        correlationid="c" * 256,
    )
    reply = await request(nc, event)
    assert reply.accepted, reply
    found = {"min_position": reply.events[-1].position}
    for name, value in (("source", source), ("actor", actor), ("correlation_id", "c" * 256)):
        rows = (await api.get("/audit", params={**found, name: value})).json()["data"]
        assert [(r["project_id"], r[name]) for r in rows] == [("far", value)], name
    assert len((await ask(nc, "audit", source=source, **found))["data"]) == 1


async def test_subscriptions_answer_every_one_in_a_page(api, nc):
    subscribed = [
        cloudevent(
            "StakeholderSubscribed",
            {"project_id": "big", "stakeholder": f"s{i:03}", "url": f"http://127.0.0.1:9/{i}"},
        )
        for i in range(105)
    ]
    created = cloudevent("ProjectCreated", {"project_id": "big", "name": "B"})
    for batch in ([created, *subscribed[:99]], subscribed[99:]):  # at most 100 a batch
        reply = await request(nc, batch)
        assert reply.accepted, reply
    params = {"min_position": reply.events[-1].position}
    page = (await api.get("/projects/big/subscriptions", params=params)).json()
    assert len(page["data"]) == 105 and "next_cursor" not in page
    first = (await api.get("/projects/big/subscriptions", params={**params, "limit": 100})).json()
    rest = await api.get(
        "/projects/big/subscriptions", params={"cursor": first["next_cursor"], **params}
    )
    assert [len(first["data"]), len(rest.json()["data"])] == [100, 5]


async def test_a_cursor_over_long_names_and_integral_numbers_over_nats(api, nc):
    rocket = "\U0001f680" * 200  # a name of 200 four-byte characters
    ces = plan_project("wide", "m1", tasks=()) + plan_project("wide", "m2", tasks=())[1:]
    for ce in ces[1:]:
        ce["data"]["name"] = rocket
    position = (await request(nc, ces)).events[-1].position
    params = {"min_position": position, "sort": "name", "limit": 1}
    first = (await api.get("/projects/wide/milestones", params=params)).json()
    assert len(first["next_cursor"]) > 1000
    second = await api.get(
        "/projects/wide/milestones", params={**params, "cursor": first["next_cursor"]}
    )
    assert [m["milestone_id"] for m in second.json()["data"]] == ["m2"], second.text
    over_nats = await ask(nc, "milestones", project_id="wide", limit=1.0, min_position=position)
    assert [m["milestone_id"] for m in over_nats["data"]] == ["m1"]
    refused = await ask(nc, "milestones", project_id="wide", limit=1.5)
    assert refused["error"] == {
        "code": "invalid",
        "message": "limit must be a whole number, got 1.5",
    }

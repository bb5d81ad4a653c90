"""The OpenAPI document, checked by tools this project did not write, against the running
services (intake, projections and queries on a real nats-server and PostgreSQL, served by
uvicorn on a loopback port):

- ``openapi-spec-validator`` accepts it;
- schemathesis (its CLI, every default check, bounded examples) finds no failure;
- ``openapi-python-client`` generates a client from it without a warning, and that client's
  typed calls work;
- the docs page (/schema) and its assets come from this package, not from another host.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from openapi_spec_validator import validate

from services.query.registry import QUERIES
from tests.conftest import caught_up, plan_project
from tests.openapi_support import FUZZ_TOKEN, SCHEMATHESIS_CONFIG, served

pytestmark = pytest.mark.timeout(600)  # the schemathesis run takes ~70 s here
AUTH = {"Authorization": f"Bearer {FUZZ_TOKEN}"}
ERROR = {"$ref": "#/components/schemas/Error"}
# schemathesis's bound: examples per operation in the fuzzing phase; the coverage phase adds the
# boundary and wrong-type cases of every parameter and body field: ~8,400 requests, ~70 s
# on a 2-core machine, 5 of them POST /events (each accepted event is committed to the log)
MAX_EXAMPLES = 10
# openapi-python-client reads JSON Lines (/audit/export) as bytes and sends an MSPDI plan
# (POST /projects/{id}/import) as bytes: it knows neither media type
GENERATOR_CONFIG = (
    "content_type_overrides:\n"
    "  application/x-ndjson: application/octet-stream\n"
    "  text/xml: application/octet-stream\n"
)


@pytest.fixture
async def live(system, authenticator, db_url):
    """The API on a real port with one planned project (p1, milestone m1, tasks t1 and t2),
    projected: (base URL, the OpenAPI document)."""
    async with served(system, authenticator) as base:
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as http:
            sent = await http.post("/events", json=plan_project())
            assert sent.status_code == 202, sent.text
            await caught_up(db_url, sent.json()["events"][-1]["position"])
            doc = (await http.get("/schema/openapi.json")).json()
        yield base, doc


async def test_the_document_is_valid_and_every_answer_typed(live):
    _, doc = live
    validate(doc)  # raises on an invalid document
    paths = doc["paths"]
    assert not [p for p in paths if p.startswith("/ui")]  # browser pages are not API
    for query in QUERIES:
        op = paths[query.path][query.method.lower()]
        ok = op["responses"]["200"]["content"]
        assert set(ok) == {
            {"json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv"}[f]
            for f in query.formats
        }
        answer = ok["application/json"]["schema"]
        if query.response is list:
            assert answer["items"]["$ref"].startswith("#/components/schemas/")
        else:
            name = answer["$ref"].rsplit("/", 1)[1]
            assert doc["components"]["schemas"][name]["properties"]["data"] != {}
        for status in ("400", "401", "403", *map(str, query.errors)):
            assert op["responses"][status]["content"]["application/json"]["schema"] == ERROR
    milestones = doc["components"]["schemas"]["MilestonesAnswer"]
    assert milestones["properties"]["data"]["items"] == {"$ref": "#/components/schemas/Milestone"}
    assert paths["/health"]["get"]["security"] == []
    assert paths["/ready"]["get"]["security"] == []
    assert set(paths["/ready"]["get"]["responses"]) == {"200", "503"}
    assert {"feedToken": []} in paths["/projects/{project_id}/milestones"]["get"]["security"]
    events = paths["/events"]["post"]
    body = events["requestBody"]
    assert body["content"]["application/json"]["schema"]["anyOf"][0] == {
        "$ref": "#/components/schemas/CloudEvent"
    }
    assert body["content"]["application/json"]["schema"]["anyOf"][1]["type"] == "array"
    for mode in ("application/cloudevents+json", "application/cloudevents-batch+json"):
        assert mode in body["description"]
    assert "ce-specversion" in body["description"]  # binary mode
    assert {"202", "400", "401", "403", "404", "409", "413", "415", "422", "503"} == set(
        events["responses"]
    )
    variants = doc["components"]["schemas"]["CloudEvent"]["discriminator"]["mapping"]
    assert "TaskCompleted" in variants
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"])  # every reference resolves


async def test_schemathesis_finds_no_failure(live, tmp_path):
    """Every default check of schemathesis over every operation: no server error, every status,
    content type, header and body as documented, invalid requests refused and valid ones
    accepted."""
    base, _ = live
    report = tmp_path / "schemathesis.xml"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "openapi_support",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        ),
        "NO_COLOR": "1",
    }
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{base}/schema/openapi.json",
        "--header",
        f"Authorization: Bearer {FUZZ_TOKEN}",
        "--max-examples",
        str(MAX_EXAMPLES),
        # the stateful phase (chains of calls along inferred links) adds a minute and checks
        # nothing about the document that the others do not
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "14",
        # one worker: hypothesis describing its strategies from two threads at once trips
        # CPython 3.11's parser ("AST constructor recursion depth mismatch")
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env=env,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)  # the whole run, to read after a failure
    assert proc.returncode == 0, text[-20000:]
    summary = text[text.index("SUMMARY") :]
    assert "Failures:" not in summary and "Errors:" not in summary, text[-5000:]
    assert "26 passed" in text or "passed" in summary, text[-5000:]


async def test_a_generated_client_makes_typed_calls(live, tmp_path):
    """openapi-python-client generates a client without a warning; its calls answer models."""
    base, doc = live
    (tmp_path / "openapi.json").write_text(json.dumps(doc))
    (tmp_path / "config.yaml").write_text(GENERATOR_CONFIG)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(tmp_path / "openapi.json"),
        "--config",
        str(tmp_path / "config.yaml"),
        "--meta",
        "none",
        "--output-path",
        str(tmp_path / "milestones_client"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Warning" not in text and "Unable" not in text, text
    sys.path.insert(0, str(tmp_path))
    try:
        client_mod = importlib.import_module("milestones_client")
        api = "milestones_client.api.default"
        milestones = importlib.import_module(f"{api}.milestones")
        post_events = importlib.import_module(f"{api}.post_events")
        project = importlib.import_module(f"{api}.project")
        models = importlib.import_module("milestones_client.models")
        client = client_mod.AuthenticatedClient(base_url=base, token=FUZZ_TOKEN, timeout=30)

        def calls():
            health = [
                models.MilestonesHealthItem("on_track"),
                models.MilestonesHealthItem("at_risk"),
            ]
            page = milestones.sync("p1", client=client, limit=1, health=health)
            one = project.sync("p1", client=client)
            missing = project.sync("nope", client=client)
            event = models.TaskCompletedEvent.from_dict(
                msgspec.to_builtins(
                    {
                        "specversion": "1.0",
                        "id": "openapi-client-1",
                        "source": "tests",
                        "type": "TaskCompleted",
                        "time": "2026-11-24T10:00:00Z",
                        "data": {"project_id": "p1", "milestone_id": "m1", "task_id": "t1"},
                    }
                )
            )
            accepted = post_events.sync(client=client, body=event)
            return page, one, missing, accepted

        page, one, missing, accepted = await asyncio.to_thread(calls)
    finally:
        sys.path.remove(str(tmp_path))
    assert isinstance(page, models.MilestonesAnswer)
    assert len(page.data) == 1 and isinstance(page.data[0], models.Milestone)
    assert page.data[0].milestone_id == "m1" and page.data[0].tasks_total == 2
    assert isinstance(one, models.ProjectAnswer) and one.data.milestones == 1
    assert isinstance(missing, models.Error) and missing.error.code == "not_found"
    assert isinstance(accepted, models.Accepted) and accepted.accepted
    assert accepted.events[0].type_ == "TaskCompleted"


async def test_the_docs_page_loads_nothing_from_another_host(live):
    base, _ = live
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as http:
        page = await http.get("/schema")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        urls = re.findall(r"""https?://[^\s"'<>\\]+""", html)
        assert [u for u in urls if urlsplit(u).netloc != urlsplit(base).netloc] == []
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)
        assert {a.rsplit("/", 1)[1] for a in assets} == {"swagger-ui-bundle.js", "swagger-ui.css"}
        for path in assets:
            assert path.startswith("/schema/")
            got = await http.get(path)
            assert got.status_code == 200, path
            kind = "text/css" if path.endswith(".css") else "text/javascript"
            assert got.headers["content-type"].startswith(kind)
            assert "immutable" in got.headers["cache-control"]
            assert len(got.content) > 100_000
        assert (await http.get("/schema/swagger")).text == html
        unknown = await http.get(assets[0].rsplit("/", 1)[0] + "/secret.txt")
        assert unknown.status_code == 404

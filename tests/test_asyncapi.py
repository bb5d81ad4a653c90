"""The AsyncAPI document: accepted by the official parser, and saying what the services do.

The official parser is JavaScript (``@asyncapi/parser``). It is installed from the npm registry,
at the versions ``tests/asyncapi/package-lock.json`` pins, into a cache directory keyed by that
lock file (``npm ci`` only when the cache lacks it), and ``tests/asyncapi/validate.cjs`` prints
its diagnostics as JSON. Without Node.js the parser test skips, except under ``CI=true``,
where it fails.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from events import EVENT_TYPES, INBOUND_TYPES
from services.app.asyncapi import (
    ASYNCAPI_VERSION,
    INTAKE_QUEUE,
    QUERY_QUEUE,
    REJECTION_TOKEN_UNKNOWN,
    asyncapi_document,
)
from services.app.asyncapi_schemas import CORRELATION_HEADER
from services.app.asyncapi_text import example_data, example_event
from services.app.schema_export import write_all
from services.auth.principal import SERVICE
from services.query.params import specs
from services.query.registry import QUERIES

CHECK_DIR = Path(__file__).parent / "asyncapi"
ERROR, WARNING = 0, 1  # the parser's (Spectral's) severities


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi_document()


# -- the official parser ---------------------------------------------------------------------------
def node_and_npm() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    reason = "Node.js and npm are needed to run the official AsyncAPI parser (@asyncapi/parser)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping")
    pytest.skip(reason)


def parser_dir(npm: str) -> Path:
    """The parser installed at the locked versions; installed (once per lock file) when missing.
    Installed beside the cache entry and renamed into place, so an interrupted install never
    looks like a complete one."""
    manifest = (CHECK_DIR / "package.json").read_bytes()
    lock = (CHECK_DIR / "package-lock.json").read_bytes()
    version = json.loads(manifest)["dependencies"]["@asyncapi/parser"]
    key = hashlib.sha256(manifest + lock).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = base / "milestones-test" / f"asyncapi-parser-{version}-{key}"
    if (cache / "node_modules" / "@asyncapi" / "parser" / "package.json").exists():
        return cache
    staging = cache.with_name(f"{cache.name}.installing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(CHECK_DIR / name, staging / name)
    done = subprocess.run(
        [npm, "ci", "--prefix", str(staging), "--no-audit", "--no-fund", "--ignore-scripts"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm ci of @asyncapi/parser {version} failed:\n{done.stderr[-3000:]}")
    try:
        staging.rename(cache)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return cache


def diagnostics(documents: dict[str, Any], tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """The parser's diagnostics of each document, by name."""
    node, npm = node_and_npm()
    installed = parser_dir(npm)
    files = {}
    for name, document in documents.items():
        files[name] = tmp / f"{name}.json"
        files[name].write_text(json.dumps(document))
    done = subprocess.run(
        [node, str(CHECK_DIR / "validate.cjs"), str(installed), *map(str, files.values())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    return {name: found[str(path)] for name, path in files.items()}


def shown(found: list[dict[str, Any]]) -> str:
    return "\n".join(f"{d['code']}: {d['message']} at {'/'.join(d['path'])}" for d in found[:20])


def test_the_official_parser_accepts_the_document_and_refuses_a_broken_one(doc, tmp_path):
    broken = copy.deepcopy(doc)  # the reference the old export made by string replacement
    broken["channels"]["inbox"]["messages"]["TaskCompleted"] = {
        "$ref": "#/components/messages/milestones.inbox.%3CType%3E:SubscribeMessage"
    }
    del broken["channels"]["queries"]["parameters"]["name"]
    found = diagnostics({"document": doc, "broken": broken}, tmp_path)

    errors = [d for d in found["document"] if d["severity"] == ERROR]
    assert not errors, shown(errors)
    if warned := [d for d in found["document"] if d["severity"] == WARNING]:
        warnings.warn(f"AsyncAPI parser warnings:\n{shown(warned)}", stacklevel=1)
    # the control: the same parser refuses what the old export wrote, so the check can fail
    codes = {d["code"] for d in found["broken"] if d["severity"] == ERROR}
    assert {"invalid-ref", "asyncapi3-channel-parameters"} <= codes, shown(found["broken"])


# -- what the document says ------------------------------------------------------------------------
def refs(node: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield path, node["$ref"]
        for k, v in node.items():
            yield from refs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from refs(v, f"{path}/{i}")


def resolve(doc: dict[str, Any], pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = doc
    for token in pointer[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"{pointer}: no {token!r}"
        node = node[token]
    while isinstance(node, dict) and "$ref" in node:  # a channel's message is a reference too
        node = resolve(doc, node["$ref"])
    return node


def test_every_ref_is_a_json_pointer_that_resolves(doc):
    found = list(refs(doc))
    assert len(found) > 200
    for where, pointer in found:
        resolve(doc, pointer)
        # AsyncAPI 3: an operation names its channel and that channel's messages; everything
        # else refers to components
        if not where.startswith("#/operations/"):
            assert pointer.startswith("#/components/"), (where, pointer)


def test_the_document_round_trips_through_json_and_the_export_writes_it(doc, tmp_path):
    assert doc["asyncapi"] == ASYNCAPI_VERSION == "3.0.0"
    assert json.loads(json.dumps(doc)) == doc
    assert msgspec.json.decode(msgspec.json.encode(doc)) == doc
    written = {p.name: p for p in write_all(tmp_path)}
    assert json.loads(written["asyncapi.json"].read_text()) == doc


def test_channel_addresses_declare_their_parameters(doc):
    addresses = {n: c["address"] for n, c in doc["channels"].items()}
    assert addresses == {
        "commands": "milestones.commands.{type}",
        "commandReplies": None,
        "inbox": "milestones.inbox.{type}",
        "rejections": "milestones.rejections.{type}",
        "projectEvents": "milestones.events.{project_id}",
        "milestoneEvents": "milestones.events.{project_id}.{milestone_id}",
        "queries": "milestones.query.{name}",
        "queryReplies": None,
    }
    for name, channel in doc["channels"].items():
        placeholders = set(re.findall(r"{(\w+)}", channel["address"] or ""))
        assert set(channel.get("parameters", {})) == placeholders, name
    params = doc["components"]["parameters"]
    assert set(params["type"]["enum"]) == INBOUND_TYPES | {"batch"}
    assert set(params["rejectedType"]["enum"]) == INBOUND_TYPES | {
        "batch",
        REJECTION_TOKEN_UNKNOWN,
    }
    assert params["name"]["enum"] == [q.name for q in QUERIES]


def test_every_command_type_is_a_message_of_the_commands_and_the_inbox(doc):
    messages = [*sorted(INBOUND_TYPES), "Batch"]
    for channel in ("commands", "inbox"):
        assert list(doc["channels"][channel]["messages"]) == messages
    command = doc["operations"]["receiveCommand"]
    assert command["action"] == "receive"
    assert command["channel"] == {"$ref": "#/channels/commands"}
    assert [m["$ref"] for m in command["messages"]] == [
        f"#/channels/commands/messages/{m}" for m in messages
    ]
    assert command["reply"]["messages"] == [{"$ref": "#/channels/commandReplies/messages/Reply"}]
    assert command["bindings"]["nats"]["queue"] == INTAKE_QUEUE
    inbox = doc["operations"]["receiveInboxMessage"]
    assert inbox["channel"] == {"$ref": "#/channels/inbox"} and "reply" not in inbox
    assert len(inbox["messages"]) == len(messages)
    reply = resolve(doc, doc["components"]["messages"]["Reply"]["payload"]["$ref"])
    assert reply["required"] == ["accepted"] and {"events", "error"} <= set(reply["properties"])
    for name in INBOUND_TYPES:
        headers = resolve(doc, doc["components"]["messages"][name]["headers"]["$ref"])
        assert {"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time"} <= set(
            headers["properties"]
        )


def test_every_query_is_an_operation_with_its_parameters_and_answer(doc):
    may = {
        "reader": {"reader", "auditor", "admin", "services"},
        "auditor": {"auditor", "admin", "services"},
        "admin": {"admin", "services"},
    }
    for query in QUERIES:
        operation = doc["operations"][f"query_{query.name}"]
        assert operation["channel"] == {"$ref": "#/channels/queries"}
        assert operation["bindings"]["nats"]["queue"] == QUERY_QUEUE
        request = resolve(doc, operation["messages"][0]["$ref"])
        params = resolve(doc, request["payload"]["$ref"])
        assert set(params["properties"]) == {s.name for s in specs(query.params)}, query.name
        required = {s.name for s in specs(query.params) if s.required}
        assert set(params.get("required", [])) == required, query.name
        answers = [resolve(doc, m["$ref"]) for m in operation["reply"]["messages"]]
        assert [a["name"] for a in answers] == [f"{query.name}Answer", "Reply"]
        security = {s["$ref"].rsplit("/", 1)[1] for s in operation["security"]}
        assert security == may[query.role], query.name
        if query.nats_only:  # digest's record and send change state: admin only
            assert "needs admin" in operation["description"]
    sort = resolve(doc, "#/components/schemas/MilestonesParams")["properties"]["sort"]
    assert "-due" in sort["enum"]  # the choices msgspec keeps out of its JSON Schema


def test_only_the_services_append_events_and_record_rejections(doc):
    operations = doc["operations"]
    for name in ("appendProjectEvent", "appendMilestoneEvent", "recordRejection"):
        assert operations[name]["action"] == "send"
        assert operations[name]["security"] == [{"$ref": "#/components/securitySchemes/services"}]
    for name in ("receiveCommand", "receiveInboxMessage"):
        assert {s["$ref"] for s in operations[name]["security"]} == {
            "#/components/securitySchemes/publisher",
            "#/components/securitySchemes/services",
        }
    schemes = doc["components"]["securitySchemes"]
    assert set(schemes) == {"publisher", "reader", "auditor", "admin", "services"}
    assert {s["type"] for s in schemes.values()} == {"userPassword"}
    stored = resolve(doc, doc["components"]["messages"]["StoredEvent"]["payload"]["$ref"])
    # every type, derived ones too
    assert len(stored["properties"]["data"]["oneOf"]) == len(EVENT_TYPES)


# -- examples against the schemas (jsonschema) and against the intake's own parser -------------
def validator(doc: dict[str, Any], pointer: str) -> jsonschema.Draft7Validator:
    """A validator for the schema at ``pointer``; draft 7 ignores a ``$ref``'s siblings, so the
    components beside it are only the place its references resolve in."""
    return jsonschema.Draft7Validator(
        {"$ref": pointer, "components": doc["components"]},
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


def test_each_example_is_valid_and_the_intake_accepts_it(doc):
    from services.intake.parse import Limits, parse

    for name in sorted(INBOUND_TYPES):
        payload = validator(doc, f"#/components/messages/{name}/payload")
        (example,) = doc["components"]["messages"][name]["examples"]
        assert example["payload"] == example_event(name)
        payload.validate(example["payload"])
        payload.validate(example_data(name))  # binary mode: the data alone
        (command,) = parse(msgspec.json.encode(example["payload"]), Limits(), SERVICE, name)
        assert type(command.fact).__name__ == name
    batch = validator(doc, "#/components/messages/Batch/payload")
    (example,) = doc["components"]["messages"]["Batch"]["examples"]
    batch.validate(example["payload"])
    assert len(parse(msgspec.json.encode(example["payload"]), Limits(), SERVICE)) == 2


def test_the_schemas_refuse_what_the_intake_refuses(doc):
    payload = validator(doc, "#/components/messages/TaskCompleted/payload")
    bad_id = example_event("TaskCompleted")
    bad_id["data"]["task_id"] = "not a subject token!"
    wrong_type = example_event("TaskCompleted") | {"type": "TaskAdded"}
    no_spec = {k: v for k, v in example_event("TaskCompleted").items() if k != "specversion"}
    for message in (bad_id, wrong_type, no_spec, {**example_data("TaskCompleted"), "task_id": ""}):
        assert not payload.is_valid(message), message
    headers = validator(doc, "#/components/schemas/CloudEventHeaders")
    binary = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "ci",
        "ce-type": "TaskCompleted",
        "ce-time": "2026-05-04T09:30:00Z",
        "ce-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    headers.validate(binary)
    headers.validate({})  # structured mode: no CloudEvent header at all
    assert not headers.is_valid({k: v for k, v in binary.items() if k != "ce-id"})


def test_the_names_the_document_repeats_agree_with_the_services():
    from services.intake import commands, service
    from services.query import nats_handlers

    assert (INTAKE_QUEUE, CORRELATION_HEADER) == (
        commands.INTAKE_QUEUE,
        commands.CORRELATION_HEADER,
    )
    assert f'queue="{QUERY_QUEUE}"' in inspect.getsource(nats_handlers)
    assert f'or "{REJECTION_TOKEN_UNKNOWN}"' in inspect.getsource(service)

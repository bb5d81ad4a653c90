"""CloudEvents in every binding a publisher may use, sent through the official CloudEvents Python
SDK (``cloudevents`` 2.2, ``cloudevents.core``): HTTP structured, batch and binary; NATS
commands and the inbox, structured and binary (the SDK has no NATS binding: its header-value
encoding over its attributes makes the ``ce-`` headers, as the NATS binding's draft §3.1 says).
Stored events are CloudEvents: the SDK reads them back, and the audit export validates against
the official CloudEvents JSON Schema (tests/data/cloudevents.schema.json)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings.common import encode_header_value
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from events import REPLY_DECODER, StoredEvent, decode_stored
from events.errors import Rejected
from events.subjects import EVENTS_PREFIX, EVENTS_STREAM, INBOX_STREAM, REJECTIONS_STREAM
from services.intake.binding import header_value, to_structured
from tests.conftest import cloudevent, wait_for

SCHEMA = json.loads((Path(__file__).parent / "data" / "cloudevents.schema.json").read_text())
VALIDATOR = jsonschema.Draft7Validator(
    SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
)
FORMAT = JSONFormat()
TIME = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
CONTEXT = {  # what a traced publisher adds: trace context, its subject, extensions of its own
    "traceparent": TRACEPARENT,
    "tracestate": TRACESTATE,
    "subject": "tickets/4711",
    "dataschema": "https://schemas.example/task-added.json",
    "tenant": "acme corp €",
    "priority": 3,
    "urgent": True,
}


def sdk_event(type_: str, data: dict, **attributes: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "tests",
            "type": type_,
            "time": TIME,
            **attributes,
        },
        data=data,
    )


def project(p: str) -> CloudEvent:
    return sdk_event("ProjectCreated", {"project_id": p, "name": f"Project {p}"})


def milestone(p: str) -> CloudEvent:
    data = {
        "project_id": p,
        "milestone_id": "m1",
        "name": "M",
        "kind": "event",
        "due": "2026-12-01",
    }
    return sdk_event("MilestonePlanned", data)


def task(p: str, t: str, **attributes: Any) -> CloudEvent:
    data = {"project_id": p, "milestone_id": "m1", "task_id": t, "title": f"Task {t}"}
    return sdk_event("TaskAdded", data, **attributes)


def nats_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """NATS binding, binary mode: every attribute a ``ce-`` header (datacontenttype too),
    values as the SDK encodes header values; the data is the body."""
    attributes = event.get_attributes()
    headers = {f"ce-{k}": encode_header_value(v) for k, v in attributes.items() if v is not None}
    return headers, FORMAT.write_data(event.get_data(), attributes.get("datacontenttype"))


def batch_body(events: list[CloudEvent]) -> bytes:
    """JSON batch format: the SDK writes each event, the array is the batch."""
    return b"[" + b",".join(FORMAT.write(e) for e in events) + b"]"


async def post(http, message: ce_http.HTTPMessage):
    return await http.post("/events", content=message.body, headers=message.headers)


async def stored(nc, position: int) -> bytes:
    return (await nc.jetstream().get_msg(EVENTS_STREAM, position)).data


async def command(nc, event: CloudEvent, binary: bool):
    subject = f"milestones.commands.{event.get_type()}"
    if binary:
        headers, body = nats_binary(event)
        msg = await nc.request(subject, body, timeout=10, headers=headers)
    else:  # structured as publishers send it today: no header at all
        msg = await nc.request(subject, FORMAT.write(event), timeout=10)
    return REPLY_DECODER.decode(msg.data)


# Binary mode carries every attribute as a header string: types are the structured mode's only
# (the SDK writes a boolean as Python's ``str``, "True"; stored as sent).
AS_HEADERS = {"tenant": "acme corp €", "priority": "3", "urgent": "True"}
TYPED = {"tenant": "acme corp €", "priority": 3, "urgent": True}  # structured mode


def assert_context_kept(body: bytes, extensions: dict[str, Any] = AS_HEADERS) -> None:
    """A stored event that keeps the publisher's context, as a CloudEvent the SDK reads."""
    envelope = decode_stored(body)
    assert (envelope.traceparent, envelope.tracestate) == (TRACEPARENT, TRACESTATE)
    assert envelope.sourcesubject == "tickets/4711"
    assert envelope.subject.startswith(f"{EVENTS_PREFIX}.")  # the aggregate's, as before
    assert envelope.dataschema == CONTEXT["dataschema"]
    read = FORMAT.read(None, body)
    assert read.get_specversion() == "1.0" and read.get_type() == "TaskAdded"
    assert {k: read.get_extension(k) for k in extensions} == extensions
    assert VALIDATOR.is_valid(json.loads(body))


# -- HTTP --------------------------------------------------------------------------------------
async def test_http_structured_batch_and_binary_through_the_sdk(http, nc):
    structured = await post(http, ce_http.to_structured(project("h1"), FORMAT))
    assert structured.status_code == 202, structured.text
    batch = await http.post(
        "/events",
        content=batch_body([milestone("h1"), task("h1", "t1")]),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert batch.status_code == 202, batch.text
    assert [e["type"] for e in batch.json()["events"]] == ["MilestonePlanned", "TaskAdded"]
    binary = ce_http.to_binary(
        task("h1", "t2", datacontenttype="application/json", **CONTEXT), FORMAT
    )
    assert (
        "ce-specversion" in binary.headers
        and binary.headers["ce-tenant"] == "acme%20corp%20%E2%82%AC"
    )
    answer = await post(http, binary)
    assert answer.status_code == 202, answer.text
    (ref,) = answer.json()["events"]
    assert_context_kept(await stored(nc, ref["position"]))
    # no content type and no ce- header: one structured CloudEvent, as before
    plain = await http.post(
        "/events", content=FORMAT.write(task("h1", "t3")), headers={"content-type": ""}
    )
    assert plain.status_code == 202, plain.text


async def test_http_refuses_what_is_not_a_mode_it_reads(http):
    event = FORMAT.write(project("h2"))
    cases = {
        "application/cloudevents+avro": (415, "event format 'application/cloudevents+avro'"),
        "text/plain": (415, "Content-Type 'text/plain' is not accepted"),
        "application/cloudevents-batch+json": (400, "carries a JSON array of CloudEvents"),
    }
    for ctype, (status, text) in cases.items():
        answer = await http.post("/events", content=event, headers={"content-type": ctype})
        assert answer.status_code == status, (ctype, answer.text)
        assert (
            answer.json()["error"]["code"] == "invalid"
            and text in answer.json()["error"]["message"]
        )


# -- NATS --------------------------------------------------------------------------------------
async def test_nats_commands_structured_and_binary_through_the_sdk(intake, nc):
    assert (await command(nc, project("n1"), binary=False)).accepted
    assert (await command(nc, milestone("n1"), binary=True)).accepted
    reply = await command(nc, task("n1", "t1", **CONTEXT), binary=True)
    assert reply.accepted and reply.events is not None, reply
    assert_context_kept(await stored(nc, reply.events[0].position))
    reply = await command(nc, task("n1", "t2", **CONTEXT), binary=False)
    assert reply.accepted and reply.events is not None, reply
    assert_context_kept(await stored(nc, reply.events[0].position), TYPED)


async def test_the_inbox_takes_both_modes_into_the_log_and_rejects_neither(intake, nc):
    js = nc.jetstream()
    await js.publish(
        "milestones.inbox.ProjectCreated", FORMAT.write(project("i1")), stream=INBOX_STREAM
    )
    for event in (milestone("i1"), task("i1", "t1", **CONTEXT)):
        headers, body = nats_binary(event)
        subject = f"milestones.inbox.{event.get_type()}"
        await js.publish(subject, body, stream=INBOX_STREAM, headers=headers)
    subject = f"{EVENTS_PREFIX}.i1.m1"

    async def task_stored() -> bool:
        try:
            last = await js.get_last_msg(EVENTS_STREAM, subject)
        except Exception:  # noqa: BLE001 - not there yet
            return False
        return decode_stored(last.data).type == "TaskAdded"

    await wait_for(task_stored, what="the binary inbox event in the log")
    assert_context_kept((await js.get_last_msg(EVENTS_STREAM, subject)).data)
    assert (await js.stream_info(REJECTIONS_STREAM)).state.messages == 0


# -- bad binary input: a clear error over HTTP and NATS, a rejection record from the inbox -------
BAD_BINARY = {  # what breaks -> (HTTP status, what the message says)
    "missing ce-id": (400, "missing required field `id`"),
    "bad ce-time": (400, "`$.time`"),
    "non-JSON data": (415, "media type 'text/xml' is not accepted"),
    "oversize extension": (400, "`$.big` brings the extension attributes to"),
    "too many extensions": (400, "the limit is 16"),
    "data not JSON": (400, "the body (the event's data) is not JSON"),
    "bad percent-encoding": (400, "header ce-tenant: its percent-encoded bytes are not UTF-8"),
    "data nested too deeply": (400, "the body (the event's data) is nested too deeply"),
    "non-ASCII header": (400, "header ce-tenant holds a character that is not ASCII"),
}


def bad_binary(case: str) -> tuple[dict[str, str], bytes]:
    headers, body = nats_binary(project("bad"))
    if case == "missing ce-id":
        del headers["ce-id"]
    elif case == "bad ce-time":
        headers["ce-time"] = "yesterday"
    elif case == "non-JSON data":
        headers["ce-datacontenttype"], body = "text/xml", b"<project/>"
    elif case == "oversize extension":
        headers["ce-big"] = "x" * 1100
    elif case == "too many extensions":
        headers.update({f"ce-x{i}": "v" for i in range(17)})
    elif case == "data not JSON":
        body = b"{not json"
    elif case == "bad percent-encoding":
        headers["ce-tenant"] = "%C0%A0"  # an overlong UTF-8 space: must be refused
    elif case == "data nested too deeply":  # a RecursionError in the decoder: never a crash
        body = b"[" * 5000
    elif case == "non-ASCII header":  # read as latin-1 by a server: refused, never garbled
        headers["ce-tenant"] = "caf\u00e9"
    return headers, body


def as_http(headers: dict[str, str]) -> dict[str, bytes]:
    """The HTTP binding carries datacontenttype as Content-Type; values go out as UTF-8 bytes,
    as a careless client would send a non-ASCII one."""
    out = {k: v for k, v in headers.items() if k != "ce-datacontenttype"}
    out["content-type"] = headers.get("ce-datacontenttype", "application/json")
    return {k: v.encode() for k, v in out.items()}


async def test_bad_binary_input_gets_a_clear_error_over_http_and_nats(http, nc):
    for case, (status, text) in BAD_BINARY.items():
        headers, body = bad_binary(case)
        answer = await http.post("/events", content=body, headers=as_http(headers))
        assert answer.status_code == status, (case, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid" and text in error["message"], (case, error)
        msg = await nc.request(
            "milestones.commands.ProjectCreated", body, timeout=10, headers=headers
        )
        reply = REPLY_DECODER.decode(msg.data)
        assert reply.error is not None and reply.error.code == "invalid", (case, reply)
        assert text in reply.error.message, (case, reply.error.message)


async def test_a_bad_binary_inbox_message_is_recorded_as_a_rejection(intake, nc):
    js = nc.jetstream()
    headers, body = bad_binary("bad ce-time")
    await js.publish("milestones.inbox.ProjectCreated", body, stream=INBOX_STREAM, headers=headers)
    deep_headers, deep = bad_binary("data nested too deeply")  # a crash once: the batch looped
    await js.publish(
        "milestones.inbox.ProjectCreated", deep, stream=INBOX_STREAM, headers=deep_headers
    )

    async def recorded() -> bool:
        return (await js.stream_info(REJECTIONS_STREAM)).state.messages == 2

    await wait_for(recorded, what="the rejection record")
    from events import REJECTION_DECODER

    info = await js.stream_info(REJECTIONS_STREAM)
    record = REJECTION_DECODER.decode(
        (await js.get_msg(REJECTIONS_STREAM, info.state.first_seq)).data
    )
    assert record.code == "invalid" and "`$.time`" in record.message
    assert record.payload is not None and json.loads(record.payload)["time"] == "yesterday"


# -- structured mode: extensions and datacontenttype ------------------------------------------
async def test_structured_extensions_are_kept_within_their_bounds(http, nc):
    ok = await http.post(
        "/events",
        json=cloudevent(
            "ProjectCreated", {"project_id": "s1", "name": "S"}, tenant="acme", priority=2
        ),
    )
    assert ok.status_code == 202, ok.text
    body = json.loads(await stored(nc, ok.json()["events"][0]["position"]))
    assert (body["tenant"], body["priority"], body["specversion"]) == ("acme", 2, "1.0")
    refused = {
        "Tenant": ("acme", "`$.Tenant` is not a CloudEvents attribute name"),
        "principal": ("admin", "`$.principal` is an attribute Milestones sets"),
        "ratio": (0.5, "`$.ratio` is not a string, an integer or a boolean"),
        "nested": ({"a": 1}, "`$.nested` is not a string"),
        "data_base64": ("e30=", "send it as `data`"),
    }
    for name, (value, text) in refused.items():
        ce = cloudevent("ProjectCreated", {"project_id": "s2", "name": "S"}, **{name: value})
        answer = await http.post("/events", json=ce)
        assert answer.status_code == 400, (name, answer.text)
        assert text in answer.json()["error"]["message"], (name, answer.json())


async def test_datacontenttype_must_say_json(http):
    for ctype in (
        "application/json",
        "application/vnd.acme.project+json",
        "application/json; charset=utf-8",
    ):
        ce = cloudevent(
            "ProjectCreated",
            {"project_id": uuid.uuid4().hex[:8], "name": "S"},
            datacontenttype=ctype,
        )
        assert (await http.post("/events", json=ce)).status_code == 202, ctype
    for ctype in ("text/xml", "application/json; charset=latin1"):
        ce = cloudevent("ProjectCreated", {"project_id": "d1", "name": "S"}, datacontenttype=ctype)
        answer = await http.post("/events", json=ce)
        assert answer.status_code == 400 and "datacontenttype" in answer.json()["error"]["message"]


# -- stored events are CloudEvents; old ones still decode ---------------------------------------
def test_stored_events_always_say_specversion_and_old_ones_decode():
    old = (
        b'{"id":"e1","source":"tests","type":"ProjectCreated","subject":"milestones.events.p1",'
        b'"time":"2026-11-24T10:00:00Z","recordedtime":"2026-11-24T10:00:01Z",'
        b'"correlationid":"c","causationid":"c","data":{"type":"ProjectCreated",'
        b'"project_id":"p1","name":"P"}}'
    )
    envelope = decode_stored(old)
    assert (envelope.specversion, envelope.datacontenttype, envelope.traceparent) == (
        "1.0",
        "application/json",
        None,
    )
    encoded = json.loads(msgspec.json.encode(envelope))
    assert encoded["specversion"] == "1.0" and VALIDATOR.is_valid(encoded)
    assert not VALIDATOR.is_valid({k: v for k, v in encoded.items() if k != "specversion"})
    assert isinstance(envelope, StoredEvent)


def test_binary_header_values_are_unquoted_and_percent_decoded_once():
    assert header_value("ce-x", "Euro%20%E2%82%AC%20%F0%9F%98%80") == "Euro € 😀"
    assert header_value("ce-x", '"quoted \\" and %25"') == 'quoted " and %'
    assert header_value("ce-x", "%2541") == "%41"  # one round only
    with pytest.raises(Rejected, match="not UTF-8"):
        header_value("ce-x", "%C0%A0")
    with pytest.raises(Rejected, match="Content-Type header"):
        to_structured(
            [("ce-datacontenttype", "application/json")], b"{}", transport="http", content_type=None
        )


# -- the audit export: every stored event a valid CloudEvent, extensions returned -------------
async def test_the_audit_export_validates_against_the_cloudevents_schema(
    intake, nc, settings, tmp_path
):
    from tests.test_ledger import cli

    assert (await command(nc, project("a1"), binary=True)).accepted
    assert (await command(nc, milestone("a1"), binary=False)).accepted
    traced = await command(nc, task("a1", "t1", **CONTEXT), binary=True)
    assert traced.accepted and traced.events is not None
    out = tmp_path / "audit.jsonl"
    assert await cli(settings, "export", "--out", str(out)) == 0
    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    events = {
        line["position"]: base64.b64decode(line["data_b64"])
        for line in lines[1 + lines[0]["checkpoints"] :]
        if line["subject"].startswith(f"{EVENTS_PREFIX}.")
    }
    assert len(events) == 3
    for position, body in events.items():
        errors = [e.message for e in VALIDATOR.iter_errors(json.loads(body))]
        assert not errors, (position, errors)
    assert_context_kept(events[traced.events[0].position])


async def test_the_audit_trail_returns_the_attributes(api, nc):
    for event in (project("a2"), milestone("a2")):
        assert (await post(api, ce_http.to_structured(event, FORMAT))).status_code == 202
    binary = ce_http.to_binary(task("a2", "t1", **CONTEXT), FORMAT)
    answer = await post(api, binary)
    assert answer.status_code == 202, answer.text
    position = answer.json()["events"][0]["position"]
    exported = await api.get(
        "/audit", params={"format": "jsonl", "project_id": "a2", "min_position": position}
    )
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert [r["attributes"] is None for r in rows] == [True, True, False]
    assert rows[-1]["attributes"] == {
        "traceparent": TRACEPARENT,
        "tracestate": TRACESTATE,
        "dataschema": CONTEXT["dataschema"],
        "sourcesubject": "tickets/4711",
        **AS_HEADERS,
    }

"""JSON Schema per event type and the AsyncAPI document, for publishers in other languages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from events import EVENT_TYPES, INBOUND_TYPES, Reply
from events.bounds import INT_MAX, INT_MIN, LINE_PATTERN, URL_PATTERN
from events.envelope import CloudEventIn
from events.project import INBOUND_FIELDS

_DECODE_URL_PATTERN = r"^https?://\S{1,2000}$"  # events.common.Url, as msgspec shows it


def intake_bounds(node: Any) -> Any:
    """The schema with the intake's bounds (events.bounds) where the types alone cannot say
    them: msgspec shows a field's decode pattern over ``extra_json_schema`` (a URL), and an
    integer or a string some future field forgets to bound gets the defaults, so the schema
    never promises more than the intake accepts."""
    if isinstance(node, list):
        return [intake_bounds(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: intake_bounds(v) for k, v in node.items()}
    if out.get("pattern") == _DECODE_URL_PATTERN:
        out["pattern"] = URL_PATTERN
    if out.get("type") == "integer":
        out.setdefault("minimum", INT_MIN)
        out.setdefault("maximum", INT_MAX)
    if out.get("type") == "string" and "format" not in out:
        out.setdefault("pattern", LINE_PATTERN)
    return out


def data_schema(name: str) -> dict[str, Any]:
    """The schema of a type's ``data``. The ``type`` tag lives in the envelope, so it is optional
    here."""
    schema = msgspec.json.schema(EVENT_TYPES[name])
    body = schema["$defs"][name]
    body["required"] = [f for f in body.get("required", []) if f != "type"]
    body["properties"].pop("type", None)
    # what publishers send where the stored form differs (a webhook secret is sent in clear and
    # stored sealed, so the stored field is wider than what a publisher may send)
    for field, inbound in INBOUND_FIELDS.get(name, {}).items():
        shown = msgspec.json.schema(inbound)
        if "default" in body["properties"][field]:
            shown["default"] = body["properties"][field]["default"]
        body["properties"][field] = shown
    schema = intake_bounds(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://milestones.example/schemas/{name}.json"
    return schema


def cloudevent_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(CloudEventIn)
    ce = schema["$defs"]["CloudEventIn"]
    ce["title"] = "CloudEvent"
    ce["properties"]["type"] = {"enum": sorted(INBOUND_TYPES)}
    ce["properties"]["data"] = {"type": "object", "description": "see <type>.json"}
    return intake_bounds(schema)


def asyncapi_document() -> dict[str, Any]:
    from faststream.nats import NatsBroker
    from faststream.specification import AsyncAPI

    from services.intake.commands import document

    broker = NatsBroker()
    document(broker)
    doc = json.loads(
        AsyncAPI(broker, title="Milestones intake", version="0.1.0").to_specification().to_json()
    )
    ce = cloudevent_schema()["$defs"]["CloudEventIn"]
    for message in doc.get("components", {}).get("messages", {}).values():
        message["payload"] = {"oneOf": [ce, {"type": "array", "items": ce}]}
    # The inbox is consumed with nats-py (services.intake.inbox), so FastStream does not list it:
    # same messages.
    for name, channel in list(doc.get("channels", {}).items()):
        inbox = json.loads(json.dumps(channel).replace("milestones.commands", "milestones.inbox"))
        inbox["description"] = (
            "Fire and forget: captured by the JetStream stream MILESTONES_INBOX and decided in "
            "order; refusals are recorded on milestones.rejections.<Type>."
        )
        doc["channels"][name.replace("commands", "inbox")] = inbox
    return doc


def write_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    docs: dict[str, Any] = {f"{name}.json": data_schema(name) for name in sorted(INBOUND_TYPES)}
    docs["CloudEvent.json"] = cloudevent_schema()
    docs["Reply.json"] = msgspec.json.schema(Reply)
    docs["asyncapi.json"] = asyncapi_document()
    for filename, doc in docs.items():
        path = out / filename
        path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
        written.append(path)
    return written

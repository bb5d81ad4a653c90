"""JSON Schema per event type and the AsyncAPI document, for publishers in other languages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from events import EVENT_TYPES, INBOUND_TYPES, Reply
from events.envelope import CloudEventIn
from services.app.asyncapi import asyncapi_document
from services.app.json_schema import intake_bounds, published_data


def data_schema(name: str) -> dict[str, Any]:
    """The schema of a type's ``data``. The ``type`` tag lives in the envelope, so it is optional
    here."""
    schema = msgspec.json.schema(EVENT_TYPES[name])
    schema["$defs"][name] = published_data(name, schema["$defs"][name], "#/$defs/{name}")
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

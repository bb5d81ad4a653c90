"""The schemas of the AsyncAPI document (``components.schemas``), all from msgspec types.

One ``msgspec.json.schema_components`` call over every type the NATS interface carries (the
CloudEvent envelope, every event, the stored event, the reply, the rejection record, each
query's parameters and answer items), so that msgspec names each component once and
disambiguates two types of the same name (it then uses the module path); everything else refers
to components through the references that call returns, never by a guessed name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_origin

import msgspec

from events import EVENT_TYPES, INBOUND_TYPES, AnyEvent, CloudEventIn, Rejection, Reply
from events import StoredEvent as StoredEnvelope
from services.app.asyncapi_text import BINARY_MODE
from services.app.json_schema import intake_bounds, published_data
from services.query.params import One, Page, specs
from services.query.registry import QUERIES, Query

SCHEMAS = "#/components/schemas/{name}"
CORRELATION_HEADER = "correlation_id"  # services.intake.commands (tests/test_asyncapi.py)


class StoredEvent(StoredEnvelope, frozen=True, kw_only=True, omit_defaults=True):
    """A stored event with its ``data`` typed: one of every event type, tagged by ``type``."""

    data: AnyEvent


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS.format(name=name)}


@dataclass
class Schemas:
    """``components.schemas`` and the references the messages use."""

    schemas: dict[str, Any]
    envelope: dict[str, str]
    stored: dict[str, str]
    reply: dict[str, str]
    rejection: dict[str, str]
    headers: dict[str, str]
    event: dict[str, dict[str, str]] = field(default_factory=dict)  # type: structured CloudEvent
    data: dict[str, dict[str, str]] = field(default_factory=dict)  # type: its data alone
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # query: its parameters
    answer: dict[str, Any] = field(default_factory=dict)  # query: its answer's schema


def for_asyncapi(node: Any) -> Any:
    """msgspec writes OpenAPI's discriminator object for a tagged union; the AsyncAPI Schema (a
    draft-07 superset) takes a discriminator as a property name and means something else by
    it. Each member pins its tag with an enum, so ``oneOf`` alone says which member it is."""
    if isinstance(node, list):
        return [for_asyncapi(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: for_asyncapi(v) for k, v in node.items() if k != "discriminator"}
    if "discriminator" in node and "anyOf" in out:
        out["oneOf"] = out.pop("anyOf")
    return out


def with_choices(node: Any, choices: tuple[str, ...]) -> Any:
    """A query parameter's allowed values (msgspec keeps them in ``extra``, which its JSON
    Schema does not show) on every string of its schema: the value, or each item of a list."""
    if isinstance(node, list):
        return [with_choices(n, choices) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: with_choices(v, choices) for k, v in node.items()}
    if out.get("type") == "string":
        out["enum"] = list(choices)
        out.pop("pattern", None)
    return out


def _items(query: Query[Any]) -> tuple[Any, ...]:
    """The types of a query's answer items (``Query.item``: one type, a tuple, or None)."""
    item = getattr(query, "item", None)
    if item is None:
        return ()
    return item if isinstance(item, tuple) else (item,)


def _answer(query: Query[Any], item_refs: list[Any], envelope: dict[str, str]) -> dict[str, Any]:
    """The answer's schema: its envelope with ``data`` typed by the query's items."""
    item: dict[str, Any] = {}
    if len(item_refs) == 1:
        item = item_refs[0]
    elif item_refs:
        item = {"anyOf": item_refs}
    if query.response is Page:
        data = {"type": "array", "items": item}
    elif query.response is One:
        data = item
    elif query.response is list or get_origin(query.response) is list:
        return {"title": f"{query.name} answer", "type": "array", "items": item}
    else:
        return envelope
    return {
        "title": f"{query.name} answer",
        "allOf": [envelope, {"type": "object", "properties": {"data": data}}],
    }


def headers() -> dict[str, Any]:
    """The headers of a command or inbox message: in binary mode the CloudEvent's attributes as
    ``ce-<attribute>``, read from the envelope's fields so that a new attribute is documented
    with it; other extension attributes follow the same pattern."""
    info = msgspec.inspect.type_info(CloudEventIn)
    assert isinstance(info, msgspec.inspect.StructType)
    properties: dict[str, Any] = {}
    required = []
    for f in info.fields:
        if f.name == "data":
            continue
        header = f"ce-{f.encode_name}"
        properties[header] = {
            "type": "string",
            "description": f"binary mode: the CloudEvent attribute {f.encode_name}",
        }
        if f.required:
            required.append(header)
    properties["ce-specversion"] = {"const": "1.0", "description": "present: binary mode"}
    properties["content-type"] = {
        "type": "string",
        "description": "binary mode: the data's media type when ce-datacontenttype is absent "
        "(JSON only; absent: application/json)",
    }
    properties[CORRELATION_HEADER] = {
        "type": "string",
        "description": "commands, optional: the reply carries it back unchanged",
    }
    return {
        "title": "CloudEvent headers",
        "type": "object",
        "description": BINARY_MODE,
        "properties": properties,
        # other extension attributes (CloudEvents names: a-z and 0-9, at most 20 characters)
        "patternProperties": {
            "^ce-[a-z0-9]{1,20}$": {"type": "string", "description": "an extension attribute"}
        },
        "if": {"required": ["ce-specversion"]},
        "then": {"required": required},
    }


def build() -> Schemas:
    events = [EVENT_TYPES[n] for n in sorted(EVENT_TYPES)]
    params = sorted({q.params for q in QUERIES}, key=lambda p: p.__name__)
    items = [t for q in QUERIES for t in _items(q)]
    roots = [CloudEventIn, StoredEvent, Reply, Rejection, Page, One, *events, *params, *items]
    refs, found = msgspec.json.schema_components(roots, ref_template=SCHEMAS)
    ref_of = {id(t): r for t, r in zip(roots, refs, strict=True)}
    schemas: dict[str, Any] = for_asyncapi(found)

    def name_of(t: Any) -> str:
        return str(ref_of[id(t)]["$ref"]).rsplit("/", 1)[1]

    envelope = intake_bounds(schemas[name_of(CloudEventIn)])
    envelope["title"] = "CloudEvent"
    envelope["properties"]["type"] = {"enum": sorted(INBOUND_TYPES), "description": "event type"}
    envelope["properties"]["data"] = {"type": "object", "description": "the type's data"}
    schemas[name_of(CloudEventIn)] = envelope
    schemas["CloudEventHeaders"] = headers()
    out = Schemas(
        schemas=schemas,
        envelope=ref_of[id(CloudEventIn)],
        stored=ref_of[id(StoredEvent)],
        reply=ref_of[id(Reply)],
        rejection=ref_of[id(Rejection)],
        headers=schema_ref("CloudEventHeaders"),
    )
    for name in sorted(INBOUND_TYPES):
        stored = schemas[name_of(EVENT_TYPES[name])]
        data, event = f"{name}Data", f"{name}Event"
        assert data not in schemas and event not in schemas, "a type took a name used here"
        schemas[data] = published_data(name, stored, SCHEMAS)
        schemas[event] = {
            "title": f"{name} CloudEvent (structured mode)",
            "allOf": [
                out.envelope,
                {
                    "type": "object",
                    "properties": {"type": {"const": name}, "data": schema_ref(data)},
                },
            ],
        }
        out.data[name], out.event[name] = schema_ref(data), schema_ref(event)
    for kind in params:
        body = schemas[name_of(kind)]
        for spec in specs(kind):
            if spec.choices:
                body["properties"][spec.name] = with_choices(
                    body["properties"][spec.name], spec.choices
                )
    for query in QUERIES:
        out.params[query.name] = ref_of[id(query.params)]
        envelope_ref = ref_of.get(id(query.response), {})
        item_refs = [ref_of[id(t)] for t in _items(query)]
        out.answer[query.name] = _answer(query, item_refs, envelope_ref)
    return out

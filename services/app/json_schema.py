"""The contract's types as JSON Schema: msgspec's schemas with the intake's bounds, shared by the
JSON Schema files (``schema_export``) and the AsyncAPI document (``asyncapi``), so both say the
same thing about every field."""

from __future__ import annotations

from typing import Any

import msgspec

from events.bounds import INT_MAX, INT_MIN, LINE_PATTERN, URL_PATTERN
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


def published_data(name: str, body: dict[str, Any], ref_template: str) -> dict[str, Any]:
    """What a publisher sends as ``data`` of type ``name``, from msgspec's schema of the stored
    event (``body``, not changed). The ``type`` tag lives in the envelope, so it is not asked
    for here; a field whose stored form differs (a webhook secret is sent in clear and stored
    sealed, so the stored field is wider) shows what a publisher may send."""
    body = msgspec.json.decode(msgspec.json.encode(body))  # a deep copy
    body["required"] = [f for f in body.get("required", []) if f != "type"]
    body["properties"].pop("type", None)
    for field, inbound in INBOUND_FIELDS.get(name, {}).items():
        (shown,), _ = msgspec.json.schema_components([inbound], ref_template=ref_template)
        if "default" in body["properties"][field]:
            shown["default"] = body["properties"][field]["default"]
        body["properties"][field] = shown
    return intake_bounds(body)

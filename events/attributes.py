"""CloudEvent attributes beyond the named ones: extension attributes, kept and bounded, and the
media types the data may declare.

A publisher may send extension attributes of its own (a tenant, a priority, a sequence number);
the intake keeps them and stores them at the top level of the stored event, as the JSON event
format places extensions, so the stored event stays a CloudEvent and the audit export returns
them. They are not fields of ``CloudEventIn`` or ``StoredEvent``: the exported JSON Schema lists
the attributes Milestones knows, and a struct field would nest them.

| bound | value |
| --- | --- |
| name | CloudEvents naming: lower-case letters and digits, 1 to 20 characters |
| value | a string (no control characters), an integer (-2^31 to 2^31-1), or a boolean |
| count | at most 16 per CloudEvent |
| size | names and values together at most 1 KiB (UTF-8; a number or boolean as its JSON text) |
| reserved | what Milestones sets on the stored event (``principal``, ``recordedtime``, ...) |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

import msgspec

from events.bounds import INT_MAX, INT_MIN, OutOfBounds, check_text
from events.envelope import CloudEventIn, StoredEvent

ExtensionValue = str | int | bool
Extensions = Mapping[str, ExtensionValue]
NO_EXTENSIONS: Extensions = MappingProxyType({})

NAME = re.compile(r"^[a-z0-9]{1,20}$")
MAX_EXTENSIONS = 16
MAX_EXTENSION_BYTES = 1024

NAMED = frozenset(CloudEventIn.__struct_fields__)  # decoded into ``CloudEventIn``
STORED = frozenset(StoredEvent.__struct_fields__)
# Set by Milestones on the stored event: a publisher's value would stand beside (or for) the
# intake's own, e.g. ``principal`` beside the credential the transport authenticated.
RESERVED = STORED - NAMED
BOUNDS_TEXT = (
    f"at most {MAX_EXTENSIONS} extension attributes, names of lower-case letters and digits "
    f"(1 to 20), values strings, integers or booleans, {MAX_EXTENSION_BYTES} bytes in all"
)

_KEYS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_KEYS_BATCH = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])
_VALUE = msgspec.json.Decoder(ExtensionValue | None)
_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()


def raw_attributes(body: bytes, batch: bool) -> list[dict[str, msgspec.Raw]]:
    """Every top-level member of each CloudEvent of a body that already decoded as CloudEvents
    (values left undecoded: this pass only finds the names)."""
    return _KEYS_BATCH.decode(body) if batch else [_KEYS.decode(body)]


def extensions_in(members: Mapping[str, msgspec.Raw]) -> Extensions:
    """The extension attributes of one CloudEvent (its members that ``CloudEventIn`` does not
    name), checked against the bounds; raises ``OutOfBounds`` naming the attribute."""
    found: dict[str, ExtensionValue] = {}
    size = 0
    for name, raw in members.items():
        if name in NAMED:
            continue
        path = f"$.{name[:64]}" if len(name) <= 64 else f"$.{name[:64]}…"  # echoed: bounded
        if name == "data_base64":
            raise OutOfBounds(
                path,
                "is not accepted: the data of Milestones' event types is JSON; send it as `data`",
            )
        if name in RESERVED:
            raise OutOfBounds(
                path,
                "is an attribute Milestones sets on the stored event, not one a publisher "
                "sends: remove it (or send it under another name)",
            )
        if not NAME.match(name):
            raise OutOfBounds(
                path,
                "is not a CloudEvents attribute name: use lower-case letters and digits only, "
                "1 to 20 characters",
            )
        try:
            value = _VALUE.decode(raw)
        except msgspec.ValidationError:
            raise OutOfBounds(
                path, "is not a string, an integer or a boolean (CloudEvents attribute values)"
            ) from None
        if value is None:  # the JSON event format: null is an absent attribute
            continue
        if isinstance(value, str):
            check_text(path, value)
        elif not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
            raise OutOfBounds(path, f"is {value}: CloudEvents integers are 32-bit signed")
        found[name] = value
        size += len(name) + len(value.encode() if isinstance(value, str) else bytes(raw))
        if len(found) > MAX_EXTENSIONS:
            raise OutOfBounds(
                path, f"is extension attribute {len(found)}: the limit is {MAX_EXTENSIONS}"
            )
        if size > MAX_EXTENSION_BYTES:
            raise OutOfBounds(
                path,
                f"brings the extension attributes to {size} bytes (names and values): "
                f"the limit is {MAX_EXTENSION_BYTES}; send less",
            )
    return MappingProxyType(found) if found else NO_EXTENSIONS


def with_extensions(stored: bytes, extensions: Extensions) -> bytes:
    """A stored event's JSON with its extension attributes at the top level, as the JSON event
    format places them (``stored`` is an encoded ``StoredEvent``, a JSON object)."""
    if not extensions:
        return stored
    return stored[:-1] + b"," + _ENCODER.encode(dict(extensions))[1:]


def stored_extensions(stored: bytes) -> dict[str, object]:
    """The extension attributes of a stored event's JSON (none for events stored before they
    were kept). What ``StoredEvent`` names is left out."""
    members = _KEYS.decode(stored)
    return {k: _ANY.decode(v) for k, v in members.items() if k not in STORED}


# -- datacontenttype --------------------------------------------------------------------------
JSON_MEDIA = "application/json"
MEDIA_TEXT = (
    "the data of Milestones' event types is JSON: send datacontenttype application/json "
    "(or a +json type), or leave it out"
)


def json_media_type(value: str) -> str | None:
    """Why the media type ``value`` is not JSON data Milestones can read, or None when it is
    (``application/json``, any ``+json`` type; a charset, if given, UTF-8)."""
    essence, _, params = value.partition(";")
    essence = essence.strip().lower()
    kind, _, subtype = essence.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return f"media type {essence!r} is not accepted: {MEDIA_TEXT}"
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return f"charset {val.strip()!r} is not accepted: JSON data is UTF-8 (RFC 8259)"
    return None

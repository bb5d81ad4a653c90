"""CloudEvents binary content mode: attributes as ``ce-`` headers, the body as ``data``.

Both bindings map a binary message to the structured JSON event it stands for, and the intake
decides that one: one parser, one set of bounds and one error text whatever the mode. Pure: no
I/O.

- HTTP (HTTP protocol binding 1.0, §3.1): binary unless the ``Content-Type`` is a CloudEvents
  format (``application/cloudevents+json``, ``application/cloudevents-batch+json``); Milestones
  takes binary when a ``ce-specversion`` header is present (a plain ``application/json`` body
  without it keeps meaning one structured CloudEvent, or an array of them, as before).
  ``Content-Type`` is the ``datacontenttype``.
- NATS (NATS protocol binding, working draft §3.1): binary exactly when a ``ce-specversion``
  header is present; no header (what publishers sent so far) means structured.
  ``datacontenttype`` is ``ce-datacontenttype``, else the ``Content-Type`` header.

Header names match case-insensitively; values are unquoted (RFC 7230 quoted strings) and then
percent-decoded once, and must be UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

import msgspec

from events.attributes import json_media_type
from events.errors import Rejected

PREFIX = "ce-"
SPECVERSION = "ce-specversion"
_ENCODER = msgspec.json.Encoder()
_RAW = msgspec.json.Decoder(msgspec.Raw)


class UnsupportedMedia(Rejected):
    """The message's media type is not JSON: code ``invalid``, HTTP status 415."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid", message)


def is_binary(headers: Iterable[str] | None) -> bool:
    """Whether a message with these header names is a binary-mode CloudEvent."""
    return headers is not None and any(h.lower() == SPECVERSION for h in headers)


def header_value(name: str, value: str) -> str:
    """An attribute from its header value: a quoted string unescaped, then one round of
    percent-decoding; percent-encoded bytes that are not UTF-8 are refused."""
    value = value.strip()
    if not value.isascii():  # a server reads raw bytes as latin-1: refused, never garbled
        raise Rejected(
            "invalid",
            f"header {name} holds a character that is not ASCII: percent-encode it as UTF-8 "
            "(the CloudEvents bindings say so)",
        )
    if "%" not in value and '"' not in value:
        return value  # nothing encoded (header values are ASCII)
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner, out, escaped = value[1:-1], [], False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        value = "".join(out)
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(
            "invalid",
            f"header {name}: its percent-encoded bytes are not UTF-8 (byte {exc.start}): "
            "percent-encode the value's UTF-8 bytes",
        ) from None


def to_structured(
    headers: Iterable[tuple[str, str]], body: bytes, *, transport: str, content_type: str | None
) -> bytes:
    """The structured JSON CloudEvent that a binary-mode message stands for.

    ``content_type`` is the message's ``Content-Type`` (absent: ``application/json``). Raises
    ``UnsupportedMedia`` when the data is not JSON, ``Rejected`` (``invalid``) for headers or a
    body that cannot be an event's attributes and data; what the attributes say is checked
    afterwards, by the structured-mode parser."""
    attributes: dict[str, object] = {}
    for name, value in headers:
        lower = name.lower()
        if not lower.startswith(PREFIX):
            continue
        attribute = lower[len(PREFIX) :]
        if attribute in ("data", "data_base64"):
            raise Rejected(
                "invalid", f"header {lower}: in binary mode the body is the data: remove it"
            )
        if attribute == "datacontenttype" and transport == "http":
            raise Rejected(
                "invalid",
                "header ce-datacontenttype: over HTTP the data's media type is the "
                "Content-Type header (HTTP binding §3.1.1): send it there only",
            )
        if attribute in attributes:
            raise Rejected("invalid", f"header {lower} appears twice: send it once")
        attributes[attribute] = header_value(lower, value)
    if "datacontenttype" not in attributes and content_type is not None:
        attributes["datacontenttype"] = content_type
    media = attributes.get("datacontenttype")
    if isinstance(media, str):
        why = json_media_type(media)
        if why is not None:
            raise UnsupportedMedia(f"binary mode: {why}")
    if not body.strip():
        raise Rejected(
            "invalid",
            "binary mode: the body is the event's data, and it is empty: send the data as JSON",
        )
    try:
        _RAW.decode(body)  # the data is spliced in as it is: it must be one JSON value
    except msgspec.DecodeError as exc:
        raise Rejected(
            "invalid", f"binary mode: the body (the event's data) is not JSON: {exc}"
        ) from None
    except RecursionError:  # as parse.py: a refusal, never a crash (the inbox would loop)
        raise Rejected(
            "invalid", "binary mode: the body (the event's data) is nested too deeply"
        ) from None
    attributes["data"] = msgspec.Raw(body)
    return _ENCODER.encode(attributes)


def nats_structured(headers: dict[str, str] | None, data: bytes) -> bytes:
    """A NATS message's body as a structured-mode CloudEvent: the body itself unless a
    ``ce-specversion`` header makes the message binary. Raises ``Rejected``."""
    if not headers or not is_binary(headers):
        return data
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    return to_structured(headers.items(), data, transport="nats", content_type=content_type)

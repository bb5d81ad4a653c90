"""``milestones types [TYPE]``: the event types other systems may send, each with its fields
(required ones marked ``*``, type and bounds) — read from the exported JSON Schema
(``services.app.schema_export``), so it says what the intake checks."""

from __future__ import annotations

import argparse
from typing import Any

from events import ENCODER, INBOUND_TYPES
from events.common import ID_PATTERN
from events.errors import StartupError
from services.app.settings import Settings
from services.cli.output import out


def add_types_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("types", help="the event types `send` accepts and their fields (* required)")
    t.add_argument(
        "type", nargs="?", choices=sorted(INBOUND_TYPES), metavar="TYPE", help="only this type"
    )
    t.add_argument("--json", action="store_true", help="each type's data schema as JSON")


def fields_of(name: str) -> list[dict[str, Any]]:
    """Each field of ``name``'s data: name, required, what it takes, default."""
    from services.app.schema_export import data_schema

    schema = data_schema(name)
    body = schema["$defs"][name]
    required = set(body.get("required", []))
    return [
        {
            "name": field,
            "required": field in required,
            "takes": takes(node, schema["$defs"]),
            "default": node.get("default"),
        }
        for field, node in body["properties"].items()
    ]


def takes(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """A field's JSON Schema in words: ``id``, ``date``, ``text 1-200``, ``one of a|b``..."""
    if "anyOf" in node:
        kinds = [takes(alt, defs) for alt in node["anyOf"] if alt.get("type") != "null"]
        return " or ".join(kinds)
    if "$ref" in node:
        ref = node["$ref"].rsplit("/", 1)[-1]
        return takes(defs[ref], defs) if ref in defs else ref
    if "enum" in node:
        return "one of " + "|".join(map(str, node["enum"]))
    kind = node.get("type")
    if kind == "array":
        return f"list of {takes(node.get('items', {}), defs)}"
    if kind == "integer":
        return f"integer {node.get('minimum', '')}..{node.get('maximum', '')}"
    if kind == "string":
        return _string(node)
    if kind == "object":
        return "object"
    return str(kind or "any")


def _string(node: dict[str, Any]) -> str:
    if node.get("pattern") == ID_PATTERN:
        return "id"
    if node.get("format") == "date":
        return "date YYYY-MM-DD"
    if node.get("format") == "date-time":
        return "time (RFC 3339)"
    if "http" in str(node.get("pattern", "")):
        return f"URL (http or https, at most {node.get('maxLength', 2048)} chars)"
    lo, hi = node.get("minLength"), node.get("maxLength")
    if hi is not None:
        return f"text {lo or 0}-{hi} chars"
    return "text"


def shown(name: str) -> list[str]:
    lines = [name]
    for f in fields_of(name):
        mark = "*" if f["required"] else " "
        default = "" if f["required"] or f["default"] is None else f" (default {f['default']})"
        lines.append(f"  {mark} {f['name']:<18} {f['takes']}{default}")
    return lines


def types(args: argparse.Namespace, settings: Settings) -> int:
    names = [args.type] if args.type else sorted(INBOUND_TYPES)
    if args.type and args.type not in INBOUND_TYPES:  # argparse checks too: for callers
        raise StartupError(f"unknown type {args.type!r}: one of {', '.join(names)}")
    if args.json:
        out(ENCODER.encode({n: fields_of(n) for n in names}).decode())
        return 0
    for n, name in enumerate(names):
        if n:
            out()
        for line in shown(name):
            out(line)
    if not args.type:
        out()
        out("* required. Send one: milestones send TYPE field=value ...")
    return 0


def send_epilog() -> str:
    """Every type with its fields (``*`` required), for ``send --help`` (about 10 ms)."""
    lines = ["types and their data fields (* required):"]
    for name in sorted(INBOUND_TYPES):
        fields = " ".join(("*" if f["required"] else "") + f["name"] for f in fields_of(name))
        lines.append(f"  {name:<24}{fields}")
    lines += [
        "",
        "`milestones types TYPE` says what each field takes (dates, ids, lengths, choices).",
    ]
    return "\n".join(lines)

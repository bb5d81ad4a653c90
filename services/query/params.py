"""What every query shares: the answer envelopes, typed parameters read from a query string or a
JSON object with messages that say what to fix, and keyset cursors.

A query's parameters are a msgspec Struct (``services.query.requests``); ``specs`` reads its
fields once, and the same description drives parsing (HTTP and NATS), the OpenAPI parameters
and the CLI's arguments.

Parsed here rather than with ``msgspec.convert``: a query string is all text (a limit arrives as
"20", a list as "a,b" or repeated keys), and the contract's error names the parameter and says
what to fix ("limit must be between 1 and 1000, got 0"), where msgspec's message is a JSON path
("Expected `int` >= 1 - at `$.limit`"). The Struct still declares the types and bounds once.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import inspect as mi

from events.errors import Rejected

MAX_LIMIT = 1000
MAX_WAIT_MS = 30_000

Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT, description="rows a page")]
Position = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1, description="a stream position")]
# A keyset cursor carries the last row's key: over a 200-character name of 4-byte characters it
# is ~1,160 characters, so the bound leaves room for any key a page ends on.
Cursor = Annotated[
    str,
    msgspec.Meta(
        max_length=4096,
        description="next_cursor of the previous page, unchanged",
        extra={"expects": "text of at most 4096 characters"},
    ),
]


def bounded_text(most: int) -> msgspec.Meta:
    """Text of at most ``most`` characters without control characters."""
    return msgspec.Meta(
        max_length=most,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        extra={"expects": f"text of at most {most} characters without control characters"},
    )


Text = Annotated[str, bounded_text(200)]
Day = Annotated[dt.date, msgspec.Meta(description="YYYY-MM-DD")]
Moment = Annotated[dt.datetime, msgspec.Meta(description="RFC 3339 time (UTC when no offset)")]


def choices(*values: str) -> msgspec.Meta:
    """Text that must be one of ``values`` (a comma list when the field is a tuple of it)."""
    return msgspec.Meta(extra={"choices": values})


class Params(msgspec.Struct, kw_only=True, frozen=True):
    """What every query accepts: read your writes (``min_position``, waiting ``wait_ms``)."""

    min_position: Annotated[
        int,
        msgspec.Meta(
            ge=0, le=2**63 - 1, description="wait until the read model has passed this position"
        ),
    ] = 0
    wait_ms: Annotated[
        int, msgspec.Meta(ge=0, le=MAX_WAIT_MS, description="how long min_position waits")
    ] = 5000


class One(msgspec.Struct, omit_defaults=True):
    data: Any
    position: int
    stale: bool = False


class Page(msgspec.Struct, omit_defaults=True):
    data: list[Any]
    position: int
    next_cursor: str | None = None
    stale: bool = False


def bad(message: str) -> Rejected:
    return Rejected("invalid", message)


# -- the fields of a parameter Struct ------------------------------------------------------------
Kind = Literal["int", "bool", "date", "time", "text", "list"]


@dataclass(frozen=True, kw_only=True)
class Spec:
    """One parameter: ``name`` as sent (query string, JSON, path), ``attr`` on the Struct."""

    name: str
    attr: str
    kind: Kind
    required: bool
    default: Any = None
    lo: int | None = None
    hi: int | None = None
    pattern: str | None = None
    max_length: int | None = None
    choices: tuple[str, ...] | None = None  # of the value, or of each item of a list
    expects: str | None = None
    description: str = ""


_SCALARS: dict[type, Kind] = {
    mi.IntType: "int",
    mi.BoolType: "bool",
    mi.DateType: "date",
    mi.DateTimeType: "time",
    mi.StrType: "text",
    mi.LiteralType: "text",
}


def _describe(t: mi.Type, found: dict[str, Any]) -> dict[str, Any]:
    """Optional, ``Annotated`` metadata and constraints, flattened into ``Spec`` keywords."""
    match t:
        case mi.UnionType(types=types):
            inner = [x for x in types if not isinstance(x, mi.NoneType)]
            if len(inner) != 1:
                raise TypeError(f"a parameter is one type or None, not {t}")
            return _describe(inner[0], found)
        case mi.Metadata(type=inner, extra_json_schema=schema, extra=extra):
            if described := (schema or {}).get("description"):
                found.setdefault("description", described)
            found |= {k: v for k, v in (extra or {}).items() if k in ("choices", "expects")}
            return _describe(inner, found)
        case mi.VarTupleType(item_type=item) if "kind" not in found:
            return _describe(item, {**found, "kind": "list"})
        case mi.IntType(ge=lo, le=hi):
            found |= {"lo": lo, "hi": hi}
        case mi.StrType(max_length=most, pattern=pattern):
            found |= {"max_length": most, "pattern": pattern}
        case mi.LiteralType(values=values):
            found.setdefault("choices", tuple(values))
    if type(t) not in _SCALARS:
        raise TypeError(f"a parameter cannot be {t}")
    return {"kind": _SCALARS[type(t)], **found}


_SPECS: dict[type[Params], tuple[Spec, ...]] = {}


def specs(kind: type[Params]) -> tuple[Spec, ...]:
    """The parameters of ``kind``, the query's own first (read once per Struct)."""
    if kind not in _SPECS:
        _SPECS[kind] = _read_specs(kind)
    return _SPECS[kind]


def _read_specs(kind: type[Params]) -> tuple[Spec, ...]:
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    shared = Params.__struct_fields__  # listed last: a query's own parameters come first
    return tuple(
        Spec(
            name=f.encode_name,
            attr=f.name,
            required=f.required,
            default=None if f.default is msgspec.NODEFAULT else f.default,
            **_describe(f.type, {}),
        )
        for f in sorted(info.fields, key=lambda f: f.name in shared)
    )


# -- parsing -------------------------------------------------------------------------------------
P = TypeVar("P", bound=Params)


def parse(kind: type[P], raw: Mapping[str, Any]) -> P:
    """The Struct from strings (a query string) or JSON values; absent, null and "" are unset."""
    fields = specs(kind)
    known = {s.name for s in fields}
    if unknown := [k for k in raw if k not in known]:
        raise bad(f"unknown parameter {unknown[0]!r}: this query takes {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for spec in fields:
        value = raw.get(spec.name)
        if value is None or value == "" or value == []:
            if spec.required:
                raise bad(f"{spec.name} is required")
            continue
        values[spec.attr] = value_of(spec, value)
    return kind(**values)


def value_of(spec: Spec, raw: Any) -> Any:
    if spec.kind == "list":
        return _items(spec, raw)
    if isinstance(raw, list):
        if len(raw) != 1:
            raise bad(f"{spec.name} is given {len(raw)} times: give it once")
        raw = raw[0]
    match spec.kind:
        case "int":
            return _int(spec, raw)
        case "bool":
            return _bool(spec.name, raw)
        case "date":
            return date_of(spec.name, raw)
        case "time":
            return _time(spec.name, raw)
    return _text(spec, raw)


def _int(spec: Spec, raw: Any) -> int:
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # a JSON number such as 5.0 (some JSON encoders write every number so)
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError
        value = int(raw)
    except ValueError:
        raise bad(f"{spec.name} must be a whole number, got {raw!r}") from None
    if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
        raise bad(f"{spec.name} must be between {spec.lo} and {spec.hi}, got {value}")
    return value


def _bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).lower()
    if word not in ("true", "false", "1", "0", "yes", "no"):
        raise bad(f"{name} must be true or false, got {raw!r}")
    return word in ("true", "1", "yes")


def date_of(name: str, raw: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(raw))
    except ValueError:
        raise bad(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from None


def _time(name: str, raw: Any) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise bad(f"{name} must be an RFC 3339 time, got {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _text(spec: Spec, raw: Any) -> str:
    if spec.choices is not None:
        if raw not in spec.choices:
            raise bad(f"{spec.name} must be one of {', '.join(spec.choices)}, got {raw!r}")
        return str(raw)
    fits = isinstance(raw, str) and (spec.max_length is None or len(raw) <= spec.max_length)
    if not fits or (spec.pattern is not None and not re.search(spec.pattern, raw)):
        expects = spec.expects or (f"match {spec.pattern}" if spec.pattern else "text")
        verb = "" if spec.pattern and not spec.expects else "be "
        raise bad(f"{spec.name} must {verb}{expects}, got {raw!r}")
    return raw


def _items(spec: Spec, raw: Any) -> tuple[str, ...]:
    """A comma-separated list (also repeated: ``?kind=a&kind=b``, or a JSON array)."""
    parts = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(p, str) for p in parts):
        raise bad(f"{spec.name} must be comma-separated text, got {raw!r}")
    values = tuple(dict.fromkeys(v.strip() for p in parts for v in p.split(",") if v.strip()))
    if spec.choices is not None and (wrong := [v for v in values if v not in spec.choices]):
        raise bad(
            f"{spec.name} accepts {', '.join(spec.choices)} (comma-separated), "
            f"not {', '.join(wrong)}"
        )
    return values


def p_date(params: Mapping[str, Any], name: str) -> dt.date | None:
    """One optional date of a page's query string (the dashboard's pages take free parameters)."""
    raw = params.get(name)
    return None if raw in (None, "") else date_of(name, raw)


# -- keyset cursors ------------------------------------------------------------------------------
def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(values)).decode().rstrip("=")


def decode_cursor(raw: str | None) -> list[Any] | None:
    if not raw:
        return None
    try:
        values = msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, msgspec.DecodeError):
        values = None
    if not isinstance(values, list) or not values:
        raise bad("cursor is not one this API handed out: pass next_cursor unchanged")
    return values


def time_cursor(row: dict[str, Any]) -> str:
    """The cursor after a row of a history read in time order: its (occurred_at, position)."""
    return encode_cursor([row["occurred_at"].isoformat(), row["position"]])


def time_key(raw: str | None) -> tuple[dt.datetime, int] | None:
    """The (occurred_at, position) a history cursor from ``time_cursor`` carries."""
    values = decode_cursor(raw)
    if values is None:
        return None
    try:
        moment, position = values
        at = dt.datetime.fromisoformat(moment)
        if at.tzinfo is None or isinstance(position, bool) or not isinstance(position, int):
            raise ValueError(values)
    except (ValueError, TypeError):
        raise bad(
            "cursor is not one the history handed out (pages are in time order since this "
            "version): pass next_cursor unchanged, or start again without a cursor"
        ) from None
    return at, position


def page_of(rows: list[Any], limit: int, key: str = "position") -> tuple[list[Any], str | None]:
    """The first ``limit`` of ``limit + 1`` rows read, and the cursor after them when there is
    more (rows ordered by a unique ``key``)."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor([rows[limit - 1][key]])

"""A query's operation in the OpenAPI document: its parameters, typed and bounded as its Struct
says, and its responses, typed as ``services.query.answers`` says.

The HTTP handlers read the query string themselves (``params.parse``, the same as NATS, so bad
input answers the contract's error JSON), so Litestar cannot see the parameters in their
signatures, nor the answer in their return type: a route's ``operation_class`` puts them into
its operation instead.

Schemas are named once in ``components/schemas``: the operations refer to them, ``SCHEMAS``
holds them, and the app adds them to the document it serves (``services.app.http``) together
with the contract's ``Error`` (a refusal: ``{"accepted": false, "error": {"code", "message"}}``),
which every module that documents an operation refers to by ``ERROR_REF``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import msgspec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    Schema,
)
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from services.query.params import One, Page, Spec, specs
from services.query.registry import QUERIES, Query

REF = "#/components/schemas/{name}"
ERROR_REF = REF.format(name="Error")
# Every status a refusal may carry, with what it means (events/errors.py maps codes to them).
ERRORS = {
    400: "invalid: the message names the parameter and says what to fix",
    401: "unauthenticated: no credential, or one that is unknown, revoked or expired",
    403: "forbidden: the credential's role or projects do not allow this",
    404: "not_found: no such project, milestone or delivery",
    409: "conflict: the request is ambiguous or the state does not allow it (the message says "
    "which)",
    413: "too_large: the body is over the limit (split it)",
    415: "invalid: a Content-Type that is not accepted",
    422: "rejected: the facts contradict what is known (the message says which)",
    503: "unavailable: the event log or a service is not reachable now: retry",
}
MEDIA = {"json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv"}

# Component schemas the operations of this module refer to (added to the document by the app).
SCHEMAS: dict[str, Any] = {}

SCALAR: dict[str, tuple[OpenAPIType, OpenAPIFormat | None]] = {
    "int": (OpenAPIType.INTEGER, None),
    "bool": (OpenAPIType.BOOLEAN, None),
    "date": (OpenAPIType.STRING, OpenAPIFormat.DATE),
    "time": (OpenAPIType.STRING, OpenAPIFormat.DATE_TIME),
    "text": (OpenAPIType.STRING, None),
    "list": (OpenAPIType.STRING, None),  # of each item
}


def schema(spec: Spec) -> Schema:
    kind, form = SCALAR[spec.kind]
    value = Schema(
        type=kind,
        format=form,
        minimum=spec.lo,
        maximum=spec.hi,
        pattern=None if spec.choices else spec.pattern,
        max_length=spec.max_length,
        enum=list(spec.choices) if spec.choices else None,
    )
    if spec.kind == "list":
        return Schema(type=OpenAPIType.ARRAY, items=value, unique_items=True)
    value.default = spec.default
    return value


def parameter(spec: Spec, in_path: bool) -> OpenAPIParameter:
    listed = spec.kind == "list"
    return OpenAPIParameter(
        name=spec.name,
        param_in="path" if in_path else "query",
        schema=schema(spec),
        description=", ".join(
            filter(None, (spec.description or spec.expects, "comma-separated" if listed else ""))
        ),
        required=in_path or spec.required,
        # absent, null and "" are all unset (params.parse): an optional ?name= is no value
        allow_empty_value=not (in_path or spec.required),
        style="form" if listed else None,
        explode=False if listed else None,
    )


def parameters(query: Query) -> list[OpenAPIParameter]:
    found = [
        parameter(s, s.name in query.path_params)
        for s in specs(query.params)
        if s.name not in query.nats_only
    ]
    exports = len(query.formats) > 1
    found.append(
        OpenAPIParameter(
            name="format",
            param_in="query",
            schema=Schema(type=OpenAPIType.STRING, enum=list(query.formats), default="json"),
            description="json: the answer; the others: every match" if exports else "only json",
            allow_empty_value=True,
        )
    )
    return sorted(found, key=lambda p: p.param_in != "path")


# -- responses -----------------------------------------------------------------------------------
def register(types: list[Any]) -> list[dict[str, Any]]:
    """msgspec's schemas of ``types`` (referring to their Structs), their Structs into
    ``SCHEMAS``."""
    found, components = msgspec.json.schema_components(types, ref_template=REF)
    for name, body in components.items():
        assert SCHEMAS.setdefault(name, body) == body, f"two schemas are named {name}"
    return list(found)


def _types(item: Any) -> tuple[Any, ...]:
    return () if item is None else item if isinstance(item, tuple) else (item,)


@cache
def registered() -> dict[Any, dict[str, Any]]:
    """Every item type of the registry, in one pass: msgspec names each Struct once (two
    Structs of one name would be told apart by module, never one overwriting the other)."""
    types = list(dict.fromkeys(t for q in QUERIES for t in _types(q.item)))
    return dict(zip(types, register(types), strict=True))


def item_schema(item: Any) -> dict[str, Any]:
    """The schema of one item: any JSON (None), a type, or one of a tuple of types."""
    found = [registered().get(t) or register([t])[0] for t in _types(item)]
    if not found:
        return {}
    return found[0] if len(found) == 1 else {"anyOf": found}


def answer_name(query: Query) -> str:
    return "".join(word.title() for word in query.name.split("_")) + "Answer"


def answer_schema(query: Query) -> dict[str, Any]:
    """The JSON answer: the ``One`` or ``Page`` envelope around the item, or a bare array."""
    item = item_schema(query.item)
    if query.response is list:
        return {"type": "array", "items": item}
    assert query.response in (One, Page), f"{query.name}: an answer is One, Page or list"
    shape = _components(query.response)
    shape["properties"]["data"] = (
        item if query.response is One else {"type": "array", "items": item}
    )
    name = answer_name(query)
    shape["title"] = name
    shape["description"] = (
        "One answer with the read position it reflects"
        if query.response is One
        else "A page: pass next_cursor as cursor for the next (null: the last page)"
    )
    assert SCHEMAS.setdefault(name, shape) == shape, f"two schemas are named {name}"
    return {"$ref": REF.format(name=name)}


def _components(envelope: type) -> dict[str, Any]:
    """The envelope's own schema (a fresh copy: each answer fills in its item)."""
    _, components = msgspec.json.schema_components([envelope], ref_template=REF)
    return dict(components[envelope.__name__])


def raw(body: dict[str, Any]) -> Schema:
    """A JSON Schema as msgspec writes it, where Litestar's spec types expect a ``Schema``
    (the document is rendered by walking plain dicts as they are)."""
    return cast(Schema, body)


def error_response(status: int) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=ERRORS[status],
        content={"application/json": OpenAPIMediaType(schema=Reference(ERROR_REF))},
    )


def responses(query: Query) -> dict[str, OpenAPIResponse]:
    content = {"application/json": OpenAPIMediaType(schema=raw(answer_schema(query)))}
    if "jsonl" in query.formats:
        content[MEDIA["jsonl"]] = OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.STRING, description="one JSON object a line")
        )
    if "csv" in query.formats:
        content[MEDIA["csv"]] = OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.STRING,
                description="RFC 4180: a header row of the JSON's field names, then a row per "
                "item; text quoted, formulas neutralised (a ' first)",
            )
        )
    found = {"200": OpenAPIResponse(description="the answer", content=content)}
    for status in sorted({400, 401, 403, *query.errors}):
        found[str(status)] = error_response(status)
    return found


def operation_class(query: Query, feed: bool = False) -> type[Operation]:
    documented = parameters(query)
    answers = responses(query)
    # a feed token in the URL is another way in on calendar routes; the bearer token everywhere
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    if feed:
        security.append({"feedToken": []})

    @dataclass
    class QueryOperation(Operation):
        def __post_init__(self) -> None:
            self.parameters = list(documented)
            self.responses = dict(answers)
            self.security = list(security)

    return QueryOperation

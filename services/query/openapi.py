"""A query's parameters in the OpenAPI document, typed and bounded as its Struct says.

The HTTP handlers read the query string themselves (``params.parse``, the same as NATS, so bad
input answers the contract's error JSON), so Litestar cannot see the parameters in their
signatures: a route's ``operation_class`` puts them into its operation instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import Operation, Schema
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from services.query.params import Spec, specs
from services.query.registry import Query

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
            description="json: a page; the others stream every match" if exports else "only json",
        )
    )
    return sorted(found, key=lambda p: p.param_in != "path")


def operation_class(query: Query) -> type[Operation]:
    documented = parameters(query)

    @dataclass
    class QueryOperation(Operation):
        def __post_init__(self) -> None:
            self.parameters = list(documented)

    return QueryOperation

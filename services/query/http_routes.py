"""The HTTP query API (Litestar), built from the registry: one route per query, the same parsing
as NATS, the contract's error JSON, and streamed exports (JSON Lines, CSV)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from litestar import MediaType, Request, Response, route
from litestar.handlers import HTTPRouteHandler
from litestar.response import Stream

from events import ENCODER, Reply
from events.errors import Rejected, http_status
from services.query.openapi import operation_class
from services.query.params import bad, parse
from services.query.queries import Queries
from services.query.registry import QUERIES, Query
from services.query.spreadsheets import csv_lines

# What a calendar client reads: a feed credential may send its token in the URL (?token=) here,
# for the projects it names. Every other route refuses feed tokens.
FEED_QUERIES = frozenset({"milestones", "project"})


def query_routes(
    queries: Queries, registry: Iterable[Query[Any]] = QUERIES
) -> list[HTTPRouteHandler]:
    by_path: dict[str, list[str]] = {}
    for query in registry:
        by_path.setdefault(query.path, []).append(query.method)
    # Litestar's own OPTIONS answer of a path lists only the methods of its first handler (the
    # digest has a GET and a POST): such a path gets one that lists them all, registered first
    # so that Litestar makes none
    shared = [options(path, methods) for path, methods in by_path.items() if len(methods) > 1]
    return shared + [endpoint(query, queries) for query in registry]


def options(path: str, methods: list[str]) -> HTTPRouteHandler:
    allow = ", ".join(sorted({*methods, "OPTIONS"}))

    async def answer() -> Response[bytes]:
        return Response(b"", status_code=204, headers={"allow": allow})

    return route(
        path.replace("}", ":str}"),
        http_method="OPTIONS",
        include_in_schema=False,
        name=f"options {path}",
    )(answer)


def endpoint(query: Query[Any], queries: Queries) -> HTTPRouteHandler:
    async def answer(request: Request) -> Response[bytes] | Stream:
        raw = request_params(request)
        raw.pop("token", None)  # a feed credential (checked at the edge), never a parameter
        for name in query.nats_only:
            raw.pop(name, None)
        try:
            # every route takes format=json (clients send it everywhere); exports add others
            fmt = raw.pop("format", None) or "json"
            if fmt not in query.formats:
                raise bad(f"format must be {', '.join(query.formats)}, got {fmt!r}")
            if fmt == "json":
                return json_response(await query.answer(queries, raw))
            return await export(query, queries, raw, fmt)
        except Rejected as exc:
            return json_response(Reply.fail(exc.code, exc.message), http_status(exc.code))

    feed = query.name in FEED_QUERIES
    return route(
        query.path.replace("}", ":str}"),
        http_method=query.method,
        status_code=200,
        name=query.name,
        operation_id=query.name,
        summary=query.summary,
        description=f"Role: {query.role}"
        + (f" (admin with {' or '.join(query.nats_only)})" if query.nats_only else "")
        + ("; a feed token may be sent as ?token= for its projects" if feed else "")
        + f". The same over NATS: {query.subject} "
        "(the request body: a JSON object of these parameters).",
        opt={
            "role": query.role,
            "feed": feed,
            # the registry's rule: a parameter that changes state (the digest's send and
            # record) asks for admin, over HTTP as over NATS
            "role_for": query.role_for,
        },
        operation_class=operation_class(query, feed),
    )(answer)


def request_params(request: Request) -> dict[str, Any]:
    """The query string (a repeated parameter as a list) and the path parameters."""
    given: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        given.setdefault(key, []).append(value)
    return {
        **{k: v[0] if len(v) == 1 else v for k, v in given.items()},
        **request.path_params,
    }


def json_response(body: Any, status: int = 200) -> Response[bytes]:
    return Response(ENCODER.encode(body), status_code=status, media_type=MediaType.JSON)


async def export(query: Query[Any], queries: Queries, raw: Mapping[str, Any], fmt: str) -> Stream:
    assert query.export is not None, f"{query.name} lists formats but has no export"
    params = parse(query.params, raw)
    position, stale, rows = await query.export(queries, params)
    headers = {"x-read-position": str(position), "x-stale": str(stale).lower()}
    if fmt == "jsonl":
        return Stream(json_lines(rows), media_type="application/x-ndjson", headers=headers)
    # a project's table is named after it (its id is a safe file name: [A-Za-z0-9_-])
    project = getattr(params, "project_id", None) if "project_id" in query.path_params else None
    filename = f"{project}-{query.name}.csv" if project else f"{query.name}.csv"
    return Stream(
        csv_lines(rows, query.export_columns),
        media_type="text/csv",  # Litestar adds "; charset=utf-8" to a text/ type
        headers={**headers, "content-disposition": f'attachment; filename="{filename}"'},
    )


async def json_lines(rows: AsyncIterator[Mapping[str, Any]]) -> AsyncIterator[bytes]:
    async for row in rows:
        yield ENCODER.encode(dict(row)) + b"\n"

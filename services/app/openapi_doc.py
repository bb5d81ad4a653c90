"""The OpenAPI document and its docs page.

The operations are documented where they are made (``services.query.openapi``,
``services.intake.http_docs``, the ledger's and the app's own routes); they refer to their
schemas by name, and this module puts those schemas into ``components/schemas``, all from the
msgspec types the services decode and encode with: the contract's ``Error`` and ``Accepted``,
``CloudEvent`` (one variant per inbound type, with that type's ``data`` as a publisher sends it,
bounded as the intake bounds it) and each query's answer.

Litestar builds ``components/schemas`` from the types it sees in handler signatures only (none
here: every handler reads its request itself), so the schemas are added where the document is
rendered: ``/schema/openapi.json`` and the docs page, which embeds it.

The docs page is Swagger UI served from this package (``static/swagger-ui``, see its
``refresh.sh``): no script, style sheet or font from another host, so it works offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import msgspec
from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.router import Router

from events import EVENT_TYPES, INBOUND_TYPES, CloudEventIn, Reply
from events.attributes import BOUNDS_TEXT, MAX_EXTENSION_BYTES, NAME
from events.bounds import INT_MAX, INT_MIN, LINE_PATTERN
from services.app.json_schema import intake_bounds, published_data
from services.query import openapi as query_docs

REF = "#/components/schemas/{name}"
ASSETS = Path(__file__).parent / "static" / "swagger-ui"
SWAGGER_VERSION = (ASSETS / "VERSION").read_text().strip()
# the version is in the URL, so a browser may keep an asset for good
ASSET_PATH = f"/assets/swagger-ui-{SWAGGER_VERSION}"
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "bearer": SecurityScheme(
        type="http",
        scheme="bearer",
        description="A Milestones token (`milestones credentials create`, or dev.json's "
        "http_token) or the identity provider's JWT. Missing or unknown: 401 unauthenticated; "
        "a role that may not: 403 forbidden.",
    ),
    "feedToken": SecurityScheme(
        type="apiKey",
        name="token",
        security_scheme_in="query",
        description="A feed credential, on calendar routes only, for its projects only.",
    ),
}


def contract_schemas() -> dict[str, Any]:
    """``Error``, ``Accepted`` and ``CloudEvent`` with a variant per inbound type."""
    inbound = sorted(INBOUND_TYPES)
    roots = [CloudEventIn, Reply, *(EVENT_TYPES[name] for name in inbound)]
    _, found = msgspec.json.schema_components(roots, ref_template=REF)
    schemas: dict[str, Any] = dict(found)
    envelope = intake_bounds(schemas.pop("CloudEventIn"))
    # Other members are extension attributes (kept and stored), named and valued as the intake
    # accepts them (events.attributes); every attribute name, the named ones too, fits NAME.
    envelope["propertyNames"] = {"pattern": NAME.pattern}
    envelope["additionalProperties"] = {
        "description": f"an extension attribute: {BOUNDS_TEXT}",
        "anyOf": [
            # what one attribute may hold of the bytes all of them share
            {"type": "string", "pattern": LINE_PATTERN, "maxLength": MAX_EXTENSION_BYTES - 1},
            {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX},
            {"type": "boolean"},
            {"type": "null", "description": "as if absent (the JSON event format)"},
        ],
    }
    variants = {}
    for name in inbound:
        schemas[f"{name}Data"] = published_data(name, schemas[name], REF)
        event = msgspec.json.decode(msgspec.json.encode(envelope))  # a copy
        event["title"] = f"{name}Event"
        event["description"] = f"A {name} CloudEvent in structured mode"
        event["properties"]["type"] = {"type": "string", "enum": [name]}
        event["properties"]["data"] = {"$ref": REF.format(name=f"{name}Data")}
        schemas[f"{name}Event"] = event
        variants[name] = REF.format(name=f"{name}Event")
    schemas["CloudEvent"] = {
        "title": "CloudEvent",
        "description": "One CloudEvent 1.0 in structured mode; `type` says what `data` is",
        "oneOf": [{"$ref": ref} for ref in variants.values()],
        "discriminator": {"propertyName": "type", "mapping": variants},
    }
    accepted = schemas.pop("Reply")
    accepted["title"] = "Accepted"
    accepted["required"] = ["accepted", "events"]
    schemas["Accepted"] = accepted
    schemas["Error"] = {
        "title": "Error",
        "description": "A refusal: `code` is a stable word (events/errors.py), `message` says "
        "what to fix",
        "type": "object",
        "required": ["accepted", "error"],
        "properties": {
            "accepted": {"type": "boolean", "description": "always false"},
            "error": {"$ref": REF.format(name="ErrorBody")},
        },
    }
    return schemas


def all_schemas() -> dict[str, Any]:
    """Every component schema the operations refer to; a name is one schema only."""
    schemas = contract_schemas()
    for name, body in query_docs.SCHEMAS.items():
        if name in schemas and schemas[name] != body:
            raise ValueError(f"two different schemas are named {name} in the OpenAPI document")
        schemas[name] = body
    return schemas


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """The document Litestar built, with the schemas its operations refer to (those only), each
    titled by its name (a generator names its model by the title)."""
    schemas = all_schemas()
    shown: dict[str, Any] = {}
    todo = _refs(doc.get("paths", {}))
    while todo:
        name = todo.pop()
        if name not in shown:
            shown[name] = {**schemas[name], "title": name}
            todo |= _refs(schemas[name])
    doc.setdefault("components", {})["schemas"] = dict(sorted(shown.items()))
    return doc


def _refs(node: Any) -> set[str]:
    """The component schemas ``node`` refers to."""
    if isinstance(node, list):
        return set().union(*map(_refs, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set().union(*map(_refs, node.values())) if node else set()
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF.format(name="")):
        found.add(ref.removeprefix(REF.format(name="")))
    return found


class CompleteJson(JsonRenderPlugin):
    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, complete(openapi_schema))


class OfflineSwagger(OpenAPIRenderPlugin):
    """Swagger UI from this package's files, the document embedded in the page."""

    def __init__(self, path: str | list[str] = "/swagger") -> None:
        super().__init__(path=path, favicon="")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        config = request.app.openapi_config
        base = f"{config.path if config else '/schema'}{ASSET_PATH}"
        spec = self.render_json(request, complete(openapi_schema)).replace(b"</", b"<\\/")
        return b"".join(
            [
                b"<!DOCTYPE html><html><head><meta charset='utf-8'>"
                b"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                b"<title>Milestones API</title>",
                f"<link rel='stylesheet' href='{base}/swagger-ui.css'>".encode(),
                f"<script src='{base}/swagger-ui-bundle.js'></script>".encode(),
                b"</head><body><div id='swagger-ui'></div><script>",
                # validatorUrl null: Swagger UI would otherwise ask a public validator
                b"SwaggerUIBundle({dom_id: '#swagger-ui', deepLinking: true, "
                b"validatorUrl: null, presets: [SwaggerUIBundle.presets.apis], spec: ",
                spec,
                b"});</script></body></html>",
            ]
        )

    def receive_router(self, router: Router) -> None:
        router.register(swagger_asset)


@get(
    f"{ASSET_PATH}/{{name:str}}",
    name="swagger_asset",
    include_in_schema=False,
    # a reader's, like the page itself: a browser sends the page's session cookie with them
    opt={"role": "reader"},
    cache=False,
)
async def swagger_asset(request: Request) -> Response[bytes]:
    name = request.path_params["name"]
    if name not in ASSET_TYPES:
        raise NotFoundException(f"no asset {name}")
    return Response(
        asset(name),
        media_type=ASSET_TYPES[name],
        headers={"cache-control": "public, max-age=31536000, immutable"},
    )


HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
}
READY = {
    "type": "object",
    "required": ["ready", "checks"],
    "properties": {
        "ready": {"type": "boolean"},
        "checks": {
            "type": "object",
            "description": "each check by name: whether it passes, and what fails and why",
            "additionalProperties": {
                "type": "object",
                "required": ["ok", "detail"],
                "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
            },
        },
    },
}


def public_operation(name: str, body: dict[str, Any], statuses: dict[int, str]) -> type[Operation]:
    """The operation of a route that needs no credential (``/health``, ``/ready``): no security
    requirement, and each status answering ``body``."""
    responses = {
        str(status): OpenAPIResponse(
            description=text,
            content={"application/json": OpenAPIMediaType(schema=cast(Schema, body))},
        )
        for status, text in statuses.items()
    }

    @dataclass
    class PublicOperation(Operation):
        def __post_init__(self) -> None:
            self.operation_id = name
            self.security = []
            self.responses = dict(responses)

    return PublicOperation


@cache
def asset(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Milestones",
        version="0.1.0",
        description="Milestones' HTTP API: CloudEvents in (POST /events), queries out. Errors "
        'are `{"accepted": false, "error": {"code", "message"}}` with the status of the code.',
        path="/schema",  # the documents need a reader's credential, like the API itself
        components=Components(security_schemes=SECURITY_SCHEMES),
        security=[{"bearer": []}],
        render_plugins=[CompleteJson(), OfflineSwagger(path=["/", "/swagger"])],
    )

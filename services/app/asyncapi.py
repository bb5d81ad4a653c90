"""The AsyncAPI 3.0.0 document of Milestones' NATS interface, written from the contract's types.

Why written here rather than by FastStream's generator: that generator describes only the
subscribers registered on a FastStream broker, and the commands and the inbox run on plain
nats-py (``services.intake.commands``, ``services.intake.inbox``) for speed, the events and
rejections are JetStream publishes, and the reply, the per-type messages, the queries'
parameters and answers and the NATS accounts are things no subscriber signature states. Every
schema here comes from the same msgspec types the services decode with
(``msgspec.json.schema_components``: the CloudEvent envelope, each event's ``data``, the stored
event, ``Reply``, ``Rejection``, each query's parameter Struct and answer), and every channel
from ``events.subjects`` and ``services.query.registry``, so the document cannot drift from the
code; ``tests/test_asyncapi.py`` checks it with the official AsyncAPI parser.

The document describes the application Milestones (AsyncAPI 3 semantics): ``receive`` is what
the services receive (commands, inbox messages, queries) and ``send`` what they publish (stored
events, rejection records). A client does the opposite.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from events import INBOUND_TYPES
from events.subjects import (
    BATCH_TOKEN,
    COMMANDS_PREFIX,
    EVENTS_PREFIX,
    EVENTS_STREAM,
    INBOX_PREFIX,
    INBOX_STREAM,
    QUERY_PREFIX,
    REJECTIONS_PREFIX,
    REJECTIONS_STREAM,
)
from services.app.asyncapi_schemas import CORRELATION_HEADER, Schemas, build
from services.app.asyncapi_text import (
    BATCH_EXAMPLE,
    CHANNELS,
    INFO,
    OPERATIONS,
    PRINCIPALS,
    REPLY_CHANNEL,
    SERVER,
    example_event,
)
from services.auth.principal import ROLES, Principal, Role
from services.query.registry import QUERIES, Query

ASYNCAPI_VERSION = "3.0.0"
# Named where they are used (tests/test_asyncapi.py checks that they agree); not imported, so
# that writing the document does not load the intake.
INTAKE_QUEUE = "milestones-intake"  # services.intake.commands
QUERY_QUEUE = "milestones-query"  # services.query.nats_handlers
REJECTION_TOKEN_UNKNOWN = "unknown"  # services.intake.service: an inbox subject without a type
NATS_BINDING = "0.1.0"


def _version() -> str:
    try:
        return importlib.metadata.version("milestones")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "0.0.0"


def ref(*path: str) -> dict[str, str]:
    """A JSON pointer into this document (tokens escaped as RFC 6901 says)."""
    tokens = (p.replace("~", "~0").replace("/", "~1") for p in path)
    return {"$ref": "#/" + "/".join(tokens)}


def _event_message(name: str, schemas: Schemas) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": f"A {name} CloudEvent: structured ({name}Event), or in binary mode its "
        f"{name}Data with the attributes as ce- headers",
        "headers": schemas.headers,
        "payload": {"oneOf": [schemas.event[name], schemas.data[name]]},
        "correlationId": ref("components", "correlationIds", "request"),
        "examples": [{"name": f"{name}Structured", "payload": example_event(name)}],
    }


def _messages(schemas: Schemas) -> dict[str, Any]:
    types = sorted(INBOUND_TYPES)
    messages = {name: _event_message(name, schemas) for name in types}
    messages["Batch"] = {
        "name": "Batch",
        "title": "A batch of CloudEvents",
        "summary": f"A JSON array of CloudEvents (structured mode only) on the {BATCH_TOKEN} "
        "subject, accepted whole or not at all",
        "payload": {
            "type": "array",
            "minItems": 1,
            "items": {"oneOf": [schemas.event[n] for n in types]},
        },
        "examples": [{"name": "TwoEvents", "payload": [example_event(n) for n in BATCH_EXAMPLE]}],
    }
    messages["Reply"] = {
        "name": "Reply",
        "title": "The verdict, or a query's error",
        "summary": "accepted, with every appended event's type, id and stream position; or "
        "not, with a stable error code and a message that says what to fix",
        "payload": schemas.reply,
    }
    messages["Rejection"] = {
        "name": "Rejection",
        "title": "A refused inbox message",
        "summary": "the message as it arrived (secrets redacted), its inbox position and why",
        "payload": schemas.rejection,
    }
    messages["StoredEvent"] = {
        "name": "StoredEvent",
        "title": "A stored event",
        "summary": "A CloudEvent with the aggregate's subject, recorded time, correlation and "
        "causation, the authenticated principal and the typed data; its stream sequence is "
        "its position",
        "payload": schemas.stored,
    }
    for query in QUERIES:
        messages[f"{query.name}Request"] = {
            "name": f"{query.name}Request",
            "title": f"{query.name}: parameters",
            "summary": "a JSON object of the query's parameters, as over HTTP (an empty body: "
            "the defaults)",
            "payload": schemas.params[query.name],
        }
        messages[f"{query.name}Answer"] = {
            "name": f"{query.name}Answer",
            "title": f"{query.name}: answer",
            "summary": query.summary,
            "payload": schemas.answer[query.name],
        }
    return messages


def _parameters() -> dict[str, Any]:
    token = "1-64 characters of A-Z, a-z, 0-9, '_' or '-'"
    return {
        "type": {
            "description": f"the CloudEvent type of the message, or {BATCH_TOKEN} for a JSON array",
            "enum": [*sorted(INBOUND_TYPES), BATCH_TOKEN],
        },
        "rejectedType": {
            "description": "the type token of the refused message's inbox subject",
            "enum": [*sorted(INBOUND_TYPES), BATCH_TOKEN, REJECTION_TOKEN_UNKNOWN],
        },
        "name": {"description": "the query", "enum": [q.name for q in QUERIES]},
        "project_id": {"description": f"the project id: {token}", "examples": ["apollo"]},
        "milestone_id": {"description": f"the milestone id: {token}", "examples": ["launch"]},
    }


def _params(*names: str, rename: dict[str, str] | None = None) -> dict[str, Any]:
    rename = rename or {}
    return {n: ref("components", "parameters", rename.get(n, n)) for n in names}


def _channels() -> dict[str, Any]:
    commands = {n: ref("components", "messages", n) for n in [*sorted(INBOUND_TYPES), "Batch"]}
    return {
        "commands": {
            "address": f"{COMMANDS_PREFIX}.{{type}}",
            "title": "Commands (request/reply)",
            "description": CHANNELS["commands"],
            "parameters": _params("type"),
            "messages": commands,
        },
        "commandReplies": {
            "address": None,
            "title": "Command replies",
            "description": REPLY_CHANNEL,
            "messages": {"Reply": ref("components", "messages", "Reply")},
        },
        "inbox": {
            "address": f"{INBOX_PREFIX}.{{type}}",
            "title": f"Inbox (JetStream stream {INBOX_STREAM})",
            "description": CHANNELS["inbox"],
            "parameters": _params("type"),
            "messages": dict(commands),
        },
        "rejections": {
            "address": f"{REJECTIONS_PREFIX}.{{type}}",
            "title": f"Rejections (JetStream stream {REJECTIONS_STREAM})",
            "description": CHANNELS["rejections"],
            "parameters": _params("type", rename={"type": "rejectedType"}),
            "messages": {"Rejection": ref("components", "messages", "Rejection")},
        },
        "projectEvents": {
            "address": f"{EVENTS_PREFIX}.{{project_id}}",
            "title": f"A project's own events (JetStream stream {EVENTS_STREAM})",
            "description": CHANNELS["events"],
            "parameters": _params("project_id"),
            "messages": {"StoredEvent": ref("components", "messages", "StoredEvent")},
        },
        "milestoneEvents": {
            "address": f"{EVENTS_PREFIX}.{{project_id}}.{{milestone_id}}",
            "title": f"A milestone's events (JetStream stream {EVENTS_STREAM})",
            "description": CHANNELS["events"],
            "parameters": _params("project_id", "milestone_id"),
            "messages": {"StoredEvent": ref("components", "messages", "StoredEvent")},
        },
        "queries": {
            "address": f"{QUERY_PREFIX}.{{name}}",
            "title": "Queries (request/reply)",
            "description": CHANNELS["queries"],
            "parameters": _params("name"),
            "messages": {
                f"{q.name}Request": ref("components", "messages", f"{q.name}Request")
                for q in QUERIES
            },
        },
        "queryReplies": {
            "address": None,
            "title": "Query answers",
            "description": REPLY_CHANNEL,
            "messages": {
                "Reply": ref("components", "messages", "Reply"),
                **{
                    f"{q.name}Answer": ref("components", "messages", f"{q.name}Answer")
                    for q in QUERIES
                },
            },
        },
    }


def _security(*roles: str) -> list[dict[str, str]]:
    return [ref("components", "securitySchemes", r) for r in roles]


def _may_ask(role: Role) -> list[str]:
    """The principals that may ask a query of this role (readers' roles are ranked); the
    services' identity may ask every query."""
    return [r for r in ROLES if Principal(id=r, role=r).may(role) and r in PRINCIPALS] + [
        "services"
    ]


def _query_operation(query: Query[Any]) -> dict[str, Any]:
    # a parameter that changes state asks for admin whatever the query's role (Query.role_for)
    changes = f" Setting {' or '.join(query.nats_only)} needs admin." if query.nats_only else ""
    return {
        "action": "receive",
        "channel": ref("channels", "queries"),
        "title": f"{QUERY_PREFIX}.{query.name}",
        "summary": query.summary,
        "description": f"Request on {QUERY_PREFIX}.{query.name}; role {query.role}.{changes} "
        "The reply is the answer, or the contract's error (Reply with accepted false).",
        "security": _security(*_may_ask(query.role)),
        "messages": [ref("channels", "queries", "messages", f"{query.name}Request")],
        "reply": {
            "channel": ref("channels", "queryReplies"),
            "messages": [
                ref("channels", "queryReplies", "messages", f"{query.name}Answer"),
                ref("channels", "queryReplies", "messages", "Reply"),
            ],
        },
        "bindings": {"nats": {"queue": QUERY_QUEUE, "bindingVersion": NATS_BINDING}},
    }


def _operations() -> dict[str, Any]:
    types = [*sorted(INBOUND_TYPES), "Batch"]
    events = [ref("channels", "projectEvents", "messages", "StoredEvent")]
    operations: dict[str, Any] = {
        "receiveCommand": {
            "action": "receive",
            "channel": ref("channels", "commands"),
            "title": "Decide a command and reply",
            "summary": OPERATIONS["receiveCommand"],
            "security": _security("publisher", "services"),
            "messages": [ref("channels", "commands", "messages", t) for t in types],
            "reply": {
                "channel": ref("channels", "commandReplies"),
                "messages": [ref("channels", "commandReplies", "messages", "Reply")],
            },
            "bindings": {"nats": {"queue": INTAKE_QUEUE, "bindingVersion": NATS_BINDING}},
        },
        "receiveInboxMessage": {
            "action": "receive",
            "channel": ref("channels", "inbox"),
            "title": "Decide an inbox message (no reply)",
            "summary": OPERATIONS["receiveInboxMessage"],
            "security": _security("publisher", "services"),
            "messages": [ref("channels", "inbox", "messages", t) for t in types],
        },
        "recordRejection": {
            "action": "send",
            "channel": ref("channels", "rejections"),
            "title": "Record a refused inbox message",
            "summary": OPERATIONS["recordRejection"],
            "security": _security("services"),
            "messages": [ref("channels", "rejections", "messages", "Rejection")],
        },
        "appendProjectEvent": {
            "action": "send",
            "channel": ref("channels", "projectEvents"),
            "title": "Append a project's event",
            "summary": OPERATIONS["appendEvent"],
            "security": _security("services"),
            "messages": events,
        },
        "appendMilestoneEvent": {
            "action": "send",
            "channel": ref("channels", "milestoneEvents"),
            "title": "Append a milestone's event",
            "summary": OPERATIONS["appendEvent"],
            "security": _security("services"),
            "messages": [ref("channels", "milestoneEvents", "messages", "StoredEvent")],
        },
    }
    for query in QUERIES:
        operations[f"query_{query.name}"] = _query_operation(query)
    return operations


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (JSON-ready)."""
    schemas = build()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Milestones",
            "version": _version(),
            "description": INFO,
        },
        "defaultContentType": "application/json",
        "servers": {
            "development": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": SERVER,
                "security": _security(*PRINCIPALS),
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {
            "schemas": schemas.schemas,
            "messages": _messages(schemas),
            "parameters": _parameters(),
            "securitySchemes": {
                role: {"type": "userPassword", "description": text}
                for role, text in PRINCIPALS.items()
            },
            "correlationIds": {
                "request": {
                    "location": f"$message.header#/{CORRELATION_HEADER}",
                    "description": "commands: a correlation id the requester chose, returned "
                    "in the reply's header",
                }
            },
        },
    }

"""The OpenAPI operation of ``POST /events``: its request bodies in every CloudEvents content
mode (structured, batch, binary) and its responses. The handler reads the body itself (so bad
input answers the contract's error JSON), so Litestar cannot see the body in its signature.

The schemas are referred to by name: ``CloudEvent`` (one event in structured mode, one variant
per type with that type's ``data``), ``Accepted`` (the 202 reply) and ``Error`` (a refusal) are
added to the document by the app (``services.app.http``), from the same msgspec types the
intake decodes with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    RequestBody,
    Schema,
)

REF = "#/components/schemas/{name}"
EVENT = REF.format(name="CloudEvent")

BINARY_MODE = (
    "**Binary mode** (the CloudEvents HTTP binding's default: Knative, Eventarc, Dapr): the "
    "attributes travel as headers, `ce-specversion: 1.0`, `ce-id`, `ce-source`, `ce-type`, "
    "`ce-time` and the optional `ce-actor`, `ce-correlationid`, `ce-subject`, `ce-dataschema`, "
    "`ce-traceparent` and other extensions; the body is the event's `data` alone, and "
    "`Content-Type` is its `datacontenttype` (`application/json`). A request is in binary mode "
    "exactly when it has a `ce-specversion` header. OpenAPI cannot say that a header changes "
    "what the body is, so the body schema below describes the structured and batch modes; in "
    "binary mode it is the `data` schema of the type named by `ce-type` (the `CloudEvent` "
    "variants show each)."
)
ERRORS = {
    400: "invalid or unknown_type: the message names the attribute or field and says what to fix",
    401: "unauthenticated: no credential, or one that is unknown, revoked or expired",
    403: "forbidden: the credential is not a publisher, or not for this source or project",
    404: "not_found: the project, milestone or task the event is about is not known",
    409: "conflict: the event contradicts the current state (e.g. the project already exists)",
    413: "too_large: the body or the batch is over the limit: split it",
    415: "invalid: a Content-Type that is not accepted (send application/cloudevents+json)",
    422: "rejected: the facts contradict what is known (e.g. a dependency cycle)",
    503: "unavailable: the event log is not reachable now, or the intake is shutting down: "
    "retry with the same ids (repeats append nothing)",
}


def _schema(body: dict[str, Any]) -> Schema:
    """A JSON Schema written as a dict where Litestar's spec types expect a ``Schema`` (the
    document is rendered by walking plain dicts as they are)."""
    return cast(Schema, body)


BATCH = {"type": "array", "items": {"$ref": EVENT}, "minItems": 1}
REQUEST = RequestBody(
    required=True,
    description="**Structured mode**: one CloudEvent, as `application/cloudevents+json` or "
    "`application/json`. **Batch mode**: a JSON array of them, appended together or not at "
    "all, as `application/cloudevents-batch+json` or `application/json`. The body is the same "
    "JSON whichever of these it is sent as; the document lists it once, as `application/json`, "
    "because client generators (openapi-python-client) cannot yet build a request with a "
    "choice of JSON media types.\n\n" + BINARY_MODE,
    content={
        "application/json": OpenAPIMediaType(schema=_schema({"anyOf": [{"$ref": EVENT}, BATCH]}))
    },
)
RESPONSES = {
    "202": OpenAPIResponse(
        description="accepted: each event with its id and log position (a repeat answers as "
        "the first time and appends nothing)",
        content={
            "application/json": OpenAPIMediaType(schema=Reference(REF.format(name="Accepted")))
        },
    ),
    **{
        str(status): OpenAPIResponse(
            description=text,
            content={
                "application/json": OpenAPIMediaType(schema=Reference(REF.format(name="Error")))
            },
        )
        for status, text in ERRORS.items()
    },
}


@dataclass
class EventsOperation(Operation):
    def __post_init__(self) -> None:
        self.operation_id = "post_events"
        self.request_body = REQUEST
        self.responses = dict(RESPONSES)
        self.security = [{"bearer": []}]


SIGN_OFF_TEXT = {"type": "string", "minLength": 1, "maxLength": 2000}
SIGN_OFF_REQUEST = RequestBody(
    required=True,
    description='`{"decision": "approve", "meaning": "approved for launch"}` or '
    '`{"decision": "reject", "reason": "the load test failed"}`: an approval says what it means, '
    "a rejection why (each may carry the other too). The approver is who the credential names: "
    "never a field of the body. An optional `Idempotency-Key` header makes a retry answer like "
    "the first request and append nothing. An admin changes the gate's approvers with "
    '`{"decision": "set_approvers", "approvers": ["dana", "lee"], "approvals_needed": 2}` '
    "(`[]`: no longer a gate).",
    content={
        "application/json": OpenAPIMediaType(
            schema=_schema(
                {
                    "type": "object",
                    "required": ["decision"],
                    "properties": {
                        "decision": {
                            "type": "string",
                            "enum": ["approve", "reject", "set_approvers"],
                        },
                        "meaning": SIGN_OFF_TEXT,
                        "reason": SIGN_OFF_TEXT,
                        "approvers": {
                            "type": "array",
                            "maxItems": 20,
                            "items": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                        "approvals_needed": {
                            "type": "integer",
                            "minimum": -2147483648,
                            "maximum": 2147483647,
                        },
                    },
                    "additionalProperties": False,
                }
            )
        )
    },
)
SIGN_OFF_ERRORS = {
    400: "invalid: the body, or an id of the path, is not valid: the message says what to fix",
    401: ERRORS[401],
    403: "forbidden: the credential is not an approver of this gate (or is a feed token; or, to "
    "change the approvers, not an admin)",
    404: "not_found: the project or the milestone is not known",
    409: "conflict: this principal has already approved the gate (a rejection clears approvals)",
    422: "rejected: the milestone is no decision gate, its tasks are open, or it is closed",
    503: ERRORS[503],
}


@dataclass
class ApprovalsOperation(Operation):
    def __post_init__(self) -> None:
        self.operation_id = "post_approval"
        self.request_body = SIGN_OFF_REQUEST
        self.responses = {
            "202": RESPONSES["202"],
            **{
                str(status): OpenAPIResponse(
                    description=text,
                    content={
                        "application/json": OpenAPIMediaType(
                            schema=Reference(REF.format(name="Error"))
                        )
                    },
                )
                for status, text in SIGN_OFF_ERRORS.items()
            },
        }
        self.security = [{"bearer": []}]

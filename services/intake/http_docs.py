"""The OpenAPI operation of ``POST /events``: its request bodies in every CloudEvents content
mode (structured, batch, binary) and its responses. The handler reads the body itself (so bad
input answers the contract's error JSON), so Litestar cannot see the body in its signature."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import Operation


@dataclass
class EventsOperation(Operation):
    def __post_init__(self) -> None:
        pass  # filled in by the OpenAPI work (issue 14)

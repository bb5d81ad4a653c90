"""What tests/test_read_robustness.py and tests/test_read_property.py share: events appended raw
to the log (as a log written before the intake bounded values holds them), an HTTP client that
keeps its app (so that its routes can be listed), and the sweep over every query route, every
dashboard page and every NATS query of a project."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
from litestar import Litestar

from events import ENCODER, EVENT_TYPES, MilestoneEvent
from events.subjects import milestone_subject, project_subject
from services.query.params import specs
from services.query.registry import QUERIES, Query

# Routes that are not a query or a page of the read side: writes, sign-in, streams, the
# process's own endpoints and the OpenAPI document (which holds no data).
NOT_SWEPT = re.compile(r"^/(events|ui/login|ui/logout|ui/live|metrics|health|ready|schema)\b|^/$")
DATES = ("0001-01-01", "9999-12-31", "1970-01-01", "2199-12-31", "2026-11-24")
TIMES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-11-24T00:00:00Z")


# -- events appended raw -------------------------------------------------------------------------
def raw_event(
    type_: str,
    data: dict[str, Any],
    *,
    time: str = "2026-11-20T10:00:00Z",
    actor: str | None = "pm",
    source: str = "legacy-importer",
    recordedtime: str = "2026-11-20T10:00:01Z",
) -> tuple[str, bytes]:
    """The subject and body of a stored event (``events.envelope.StoredEvent``), written as the
    intake writes one, with whatever values it is given."""
    milestone_event = issubclass(EVENT_TYPES[type_], MilestoneEvent)
    subject = (
        milestone_subject(data["project_id"], data["milestone_id"])
        if milestone_event
        else project_subject(data["project_id"])
    )
    event_id = uuid.uuid4().hex
    body = {
        "id": event_id,
        "source": source,
        "type": type_,
        "subject": subject,
        "time": time,
        "recordedtime": recordedtime,
        "correlationid": event_id,
        "causationid": event_id,
        "data": {"type": type_, **data},
        **({"actor": actor} if actor is not None else {}),
    }
    return subject, ENCODER.encode(body)


async def append_raw(nc: nats.NATS, events: Iterable[tuple[str, bytes]]) -> int:
    """Append with the services' identity, bypassing the intake; the last position."""
    js = nc.jetstream()
    last = 0
    for subject, body in events:
        last = (await js.publish(subject, body)).seq
    return last


# -- the sweep -----------------------------------------------------------------------------------
@dataclass
class Sweep:
    """Every call made, and those that failed (a 5xx, or an exception)."""

    calls: list[tuple[str, str, dict[str, Any], int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def status(self, path: str, params: dict[str, Any] | None = None) -> int:
        """The status of the first call to ``path`` with exactly ``params``."""
        return next(s for _, p, q, s in self.calls if p == path and q == (params or {}))


def _query_of(path: str) -> Query[Any] | None:
    template = re.sub(r":\w+}", "}", path)
    return next((q for q in QUERIES if q.path == template), None)


def _variants(path: str, query: Query[Any] | None, project: str, deep: bool) -> list[dict]:
    """Parameters to call ``path`` with: none, and (``deep``) each date and time parameter at
    the edges of the calendar."""
    base: dict[str, Any] = {}
    if query is not None:
        names = {s.name: s for s in specs(query.params)}
        if "project_id" in names and "project_id" not in query.path_params:
            base["project_id"] = project
        out = [base]
        if "format" not in base and len(query.formats) > 1:
            out += [{**base, "format": f} for f in query.formats if f != "json"]
        if deep:
            for spec in names.values():
                values = DATES if spec.kind == "date" else TIMES if spec.kind == "time" else ()
                out += [{**base, spec.name: v} for v in values]
        return out
    if path.startswith("/ui/audit"):
        base = {"project_id": project}
    if path.startswith("/audit/proof"):
        base = {"position": 1}
    if path.startswith("/audit/consistency"):
        base = {"from": 1}
    out = [base]
    if path.startswith("/ui"):
        days = DATES if deep else ("2026-11-24",)
        out += [{**base, "as_of": d} for d in days]
        if path.endswith("/trend") or path.endswith("/trend.svg"):
            out += [{**base, "until": d} for d in days]
    return out


async def sweep(
    client: httpx.AsyncClient,
    app: Litestar,
    nc: nats.NATS,
    project: str,
    milestones: Iterable[str],
    *,
    deep: bool = True,
) -> Sweep:
    """Call every route of ``app`` (but ``NOT_SWEPT``) for ``project`` and each of its
    ``milestones``, with the parameter variants above, and every NATS query likewise."""
    result = Sweep()
    mids = list(milestones) or ["none"]
    for route in app.routes:
        if NOT_SWEPT.search(route.path):
            continue
        query = _query_of(route.path)
        fills = [
            {"project_id": project, "milestone_id": m, "id": "no-such-delivery"}
            for m in (mids if "{milestone_id" in route.path else mids[:1])
        ]
        for method in sorted(set(getattr(route, "methods", ())) & {"GET", "POST"}):
            for fill in fills:
                url = re.sub(r"{(\w+)(:\w+)?}", lambda m, f=fill: f[m.group(1)], route.path)
                for params in _variants(route.path, query, project, deep):
                    try:
                        r = await client.request(method, url, params=params)
                        status = r.status_code
                        text = r.text
                    except Exception as exc:  # an error while streaming is a failure too
                        status, text = 599, repr(exc)
                    result.calls.append((method, url, params, status))
                    if status >= 500:
                        result.failures.append(f"{method} {url} {params}: {status} {text[:400]}")
    for query in QUERIES:
        needs = set(query.path_params) | {s.name for s in specs(query.params) if s.required}
        for m in mids if "milestone_id" in needs else mids[:1]:
            params = {
                k: v
                for k, v in {"project_id": project, "milestone_id": m, "id": "x"}.items()
                if k in needs or (k == "project_id" and k in {s.name for s in specs(query.params)})
            }
            try:
                reply = await nc.request(query.subject, ENCODER.encode(params), timeout=10)
                body = json.loads(reply.data)
            except Exception as exc:  # no answer at all (the handler raised) is a failure too
                result.failures.append(f"NATS {query.name} {params}: {exc!r}")
                continue
            error = body.get("error") if isinstance(body, dict) else None
            result.calls.append(("NATS", query.name, params, 200 if not error else 400))
            if error and error["code"] in ("internal", "unavailable"):
                result.failures.append(f"NATS {query.name} {params}: {error}")
    return result

"""The CLI's read commands: each asks the query service over NATS (``milestones.query.<name>``)
and prints a table, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import sys

import msgspec

from events import ENCODER
from events.errors import StartupError
from events.subjects import query_subject
from services.app.settings import Settings


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


# -- read side ------------------------------------------------------------------------------------
async def _query(settings: Settings, name: str, params: dict) -> object:
    import nats

    nc = await nats.connect(settings.nats_url, connect_timeout=5)
    try:
        msg = await nc.request(
            query_subject(name),
            ENCODER.encode({k: v for k, v in params.items() if v is not None}),
            timeout=35,
        )
    except nats.errors.NoRespondersError:
        raise StartupError(
            "no query service answers on milestones.query.*: start `milestones dev` or `serve query`"
        ) from None
    finally:
        await nc.close()
    return msgspec.json.decode(msg.data)


def _table(rows: list[dict], columns: list[str]) -> None:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    _out("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        _out("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show(result: object, args: argparse.Namespace, columns: list[str]) -> int:
    if isinstance(result, dict) and result.get("accepted") is False:
        sys.stderr.write(f"milestones: {result['error']['code']}: {result['error']['message']}\n")
        return 1
    if args.json:
        _out(ENCODER.encode(result).decode())
        return 0
    data = result.get("data") if isinstance(result, dict) else result
    rows = data if isinstance(data, list) else [data]
    _table(rows, columns)
    if isinstance(result, dict):
        if result.get("stale"):
            _out(
                f"(stale: the read model is at position {result['position']}, not yet at --min-position)"
            )
        if result.get("next_cursor"):
            _out(f"(more: --cursor {result['next_cursor']})")
    return 0


STATUS_COLUMNS = [
    "project_id",
    "milestone_id",
    "name",
    "kind",
    "phase",
    "due",
    "progress",
    "health",
    "health_reasons",
]


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    common = {"min_position": args.min_position, "cursor": args.cursor, "limit": args.limit}
    if args.milestone:
        result = await _query(
            settings,
            "milestone",
            {"project_id": args.project, "milestone_id": args.milestone, **common},
        )
    else:
        result = await _query(
            settings,
            "milestones",
            {
                "project_id": args.project,
                "health": args.health,
                "kind": args.kind,
                "sort": args.sort,
                **common,
            },
        )
    return _show(result, args, STATUS_COLUMNS)


async def _history(args: argparse.Namespace, settings: Settings) -> int:
    result = await _query(
        settings,
        "history",
        {
            "milestone_id": args.milestone,
            "project_id": args.project,
            "min_position": args.min_position,
            "cursor": args.cursor,
        },
    )
    return _show(
        result,
        args,
        ["position", "occurred_at", "type", "old_due", "new_due", "reason", "actor", "source"],
    )


async def _audit(args: argparse.Namespace, settings: Settings) -> int:
    params = {
        "project_id": args.project,
        "milestone_id": args.milestone,
        "actor": args.actor,
        "source": args.source,
        "type": args.type,
        "from": args.since,
        "to": args.until,
        "correlation_id": args.correlation_id,
        "cursor": args.cursor,
        "limit": args.limit,
        "min_position": args.min_position,
    }
    result = await _query(settings, "audit", params)
    return _show(
        result,
        args,
        ["position", "occurred_at", "type", "project_id", "milestone_id", "actor", "source"],
    )


async def _report(args: argparse.Namespace, settings: Settings) -> int:
    params = {
        "project_id": args.project,
        "as_of": args.as_of,
        "position": args.position,
        "baseline": args.baseline,
        "compare_as_of": args.compare_as_of,
        "compare_position": args.compare_position,
    }
    result = await _query(settings, "report", params)
    if args.json or not isinstance(result, dict) or result.get("accepted") is False:
        return _show(result, args, [])
    data = result["data"]
    now = data.get("now", data)
    _table(
        now["milestones"],
        [
            "milestone_id",
            "name",
            "kind",
            "reference",
            "forecast",
            "achieved_on",
            "slip_days",
            "reschedules",
            "on_time",
            "state",
        ],
    )
    rate = "-" if now["on_time_rate"] is None else f"{now['on_time_rate']:.0%}"
    _out(
        f"\nbaseline {now['baseline'] or '(first planned dates)'}; position {now['position']}"
        f"{'; as of ' + now['as_of'] if now['as_of'] else ''}"
    )
    _out(
        f"achieved {now['achieved']}/{now['planned']}, on time {now['on_time']} ({rate}); "
        f"mean slip {now['mean_slip_days']} days, worst {now['worst_slip_days']}; "
        f"forecast finish {now['forecast_finish']} vs {now['reference_finish']} "
        f"(schedule variance {now['schedule_variance_days']} days)"
    )
    if "changes" in data:
        _out("\nchanged since the compared point:")
        _table(
            data["changes"],
            [
                "milestone_id",
                "then_forecast",
                "now_forecast",
                "moved_days",
                "then_state",
                "now_state",
            ],
        )
    return 0


async def _trend(args: argparse.Namespace, settings: Settings) -> int:
    result = await _query(settings, "trend", {"project_id": args.project, "until": args.until})
    if args.json or not isinstance(result, dict) or result.get("accepted") is False:
        return _show(result, args, [])
    rows = [
        {
            "milestone_id": s["milestone_id"],
            **{p["report_date"]: p["forecast"] for p in s["points"]},
        }
        for s in result["data"]["series"]
    ]
    _table(rows, ["milestone_id", *result["data"]["report_dates"]])
    return 0


async def _digest(args: argparse.Namespace, settings: Settings) -> int:
    params = {"project_id": args.project, "record": not args.preview, "send": not args.preview}
    result = await _query(settings, "digest", params)
    if args.json or not isinstance(result, dict) or result.get("accepted") is False:
        return _show(result, args, [])
    from services.notify.digest import render

    _out(render(result["data"]["digest"]))
    if not args.preview:
        _out(f"\n(recorded; queued for {result['data']['queued_deliveries']} subscriber(s))")
    return 0


async def _deliveries(args: argparse.Namespace, settings: Settings) -> int:
    if args.retry:
        return _show(
            await _query(settings, "retry_delivery", {"id": args.retry}), args, ["id", "status"]
        )
    params = {
        "project_id": args.project,
        "status": args.status,
        "kind": args.kind,
        "cursor": args.cursor,
        "limit": args.limit,
    }
    result = await _query(settings, "deliveries", params)
    if isinstance(result, dict) and isinstance(result.get("data"), list):
        for d in result["data"]:
            d["last"] = d["last_status"] or d["last_error"]
    return _show(
        result,
        args,
        [
            "id",
            "kind",
            "project_id",
            "milestone_id",
            "stakeholder",
            "status",
            "attempts",
            "last",
            "created_at",
            "delivered_at",
        ],
    )


async def _projects(args: argparse.Namespace, settings: Settings) -> int:
    result = await _query(
        settings,
        "projects",
        {
            "project_id": args.project,
            "cursor": args.cursor,
            "limit": args.limit,
            "min_position": args.min_position,
        },
    )
    if isinstance(result, dict) and isinstance(result.get("data"), list):
        for p in result["data"]:
            p["by_health"] = ", ".join(f"{n} {h}" for h, n in p["by_health"].items())
            p["next"] = (
                p["next_milestone"]
                and f"{p['next_milestone']['milestone_id']} {p['next_milestone']['due']}"
            )
    return _show(
        result,
        args,
        ["project_id", "name", "milestones", "by_health", "next", "expected_finish", "goals"],
    )


async def _subscriptions(args: argparse.Namespace, settings: Settings) -> int:
    result = await _query(
        settings, "subscriptions", {"project_id": args.project, "min_position": args.min_position}
    )
    return _show(result, args, ["stakeholder", "milestone_id", "url", "signed", "subscribed_at"])


async def _reports(args: argparse.Namespace, settings: Settings) -> int:
    result = await _query(
        settings,
        "status_reports",
        {
            "project_id": args.project,
            "milestone_id": args.milestone,
            "cursor": args.cursor,
            "limit": args.limit,
            "min_position": args.min_position,
        },
    )
    return _show(
        result, args, ["position", "reported_at", "milestone_id", "health", "note", "actor"]
    )


async def _projections(args: argparse.Namespace, settings: Settings) -> int:
    result = await _query(settings, "projections", {})
    if isinstance(result, list):
        for r in result:
            r["lag"] = r["pending"]
            r["rate"] = f"{r['rate']:.0f}/s"
    return _show(result, args, ["projection", "position", "lag", "rate", "parked", "updated_at"])


async def _parked(args: argparse.Namespace, settings: Settings) -> int:
    result = await _query(settings, "parked", {"projection": args.projection})
    return _show(result, args, ["projection", "position", "subject", "type", "attempts", "error"])

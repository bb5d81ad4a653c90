"""``milestones import PLAN.xml --project ID``: an MS Project plan (MSPDI) into a project.

A thin shell around ``services.plans``: read the file, learn what the project holds from its
report (``milestones.query.report``, as a reader), map the difference to CloudEvents with
deterministic ids, and send them through the normal intake as the publisher, in batches
(``milestones.commands.batch``, each accepted whole or not at all). A bad file is one line and
sends nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

import msgspec

from events import ENCODER, REPLY_DECODER
from events.subjects import BATCH_TOKEN, COMMANDS_PREFIX
from services.app.settings import Settings
from services.cli.output import fail, out, progress
from services.plans import current, mspdi
from services.plans.cloudevents import batches, cloudevent
from services.plans.mapping import KIND_ALIAS, Imported, import_plan

SOURCE = "milestones-plan-import"
TIMEOUT_S = 30.0


def add_plan_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = sub.add_parser(
        "import",
        help="import an MS Project plan (MSPDI XML) into a project",
        description="Turn an MS Project XML plan into CloudEvents (phases, milestones, tasks, "
        "dependencies, baselines, achievements) and send what the project does not hold yet. "
        "Importing the same file again sends nothing new; a moved finish is a reschedule. "
        "Exit 0 when everything was accepted, 1 for a bad file or a refused batch, 2 when "
        "the services cannot be reached.",
    )
    imp.add_argument("plan", metavar="PLAN.xml", help="the MSPDI file (MS Project, ProjectLibre)")
    imp.add_argument("--project", required=True, help="the project id (created when new)")
    imp.add_argument("--dry-run", action="store_true", help="print what would be sent, send none")
    imp.add_argument(
        "--cancel-removed",
        action="store_true",
        help="cancel the project's open milestones the file no longer has (else listed only)",
    )
    imp.add_argument("--source", default=SOURCE, help=f"CloudEvent source (default {SOURCE})")
    imp.add_argument(
        "--kind-field",
        default=KIND_ALIAS,
        help=f"the custom field whose value is a milestone's kind (default {KIND_ALIAS!r})",
    )
    imp.add_argument(
        "--json", action="store_true", help="print events (dry run) and replies as JSON"
    )


def read_plan(path: Path) -> mspdi.Plan:
    size = path.stat().st_size
    if size > mspdi.MAX_PLAN_BYTES:  # refused before it is read
        raise mspdi.PlanError(
            f"the file is {size:,} bytes: plans up to {mspdi.MAX_PLAN_BYTES:,} bytes are imported"
        )
    return mspdi.parse(path.read_bytes())


async def project_report(settings: Settings, project_id: str) -> dict[str, Any] | None:
    """The project's report (None: no such project), read as a reader."""
    from services.cli.read import ask
    from services.query.registry import QUERIES

    query = next(q for q in QUERIES if q.name == "report")
    reply = await ask(settings, query, {"project_id": project_id})
    if isinstance(reply, dict) and reply.get("accepted") is False:
        error = reply["error"]
        if error["code"] == "not_found" and "is not known" in error["message"]:
            return None
        raise mspdi.PlanError(f"the project's report: {error['code']}: {error['message']}")
    data: dict[str, Any] = reply["data"]
    return data


async def import_command(args: argparse.Namespace, settings: Settings) -> int:
    now = dt.datetime.now(dt.UTC)
    try:
        plan = read_plan(Path(args.plan))
        report = await project_report(settings, args.project)
        result = import_plan(
            plan,
            args.project,
            current.from_report(report),
            now,
            kind_alias=args.kind_field,
            cancel_removed=args.cancel_removed,
        )
    except mspdi.PlanError as exc:
        fail(f"{args.plan}: {exc}")
        return 1
    told(result, args)
    events = [cloudevent(o, args.source, now) for o in result.events]
    if args.dry_run:
        for event in events:
            if args.json:
                out(ENCODER.encode(event).decode())
            else:
                out(f"would send {event['type']} {ENCODER.encode(event['data']).decode()}")
        out(f"dry run: {len(events)} event(s) would be sent, none was")
        return 0
    return await send(settings, events, args.json)


def told(result: Imported, args: argparse.Namespace) -> None:
    for warning in result.warnings:
        fail(f"warning: {warning}")
    if result.removed:
        what = "cancelled" if args.cancel_removed else "listed only (--cancel-removed cancels them)"
        out(f"not in the file: {', '.join(result.removed)} ({what})")


async def send(settings: Settings, events: list[dict[str, Any]], as_json: bool) -> int:
    import nats.errors

    from services.cli.client import connect_as, no_responders

    bodies = batches(events, settings.max_batch_events, settings.max_message_bytes)
    subject = f"{COMMANDS_PREFIX}.{BATCH_TOKEN}"
    nc = await connect_as(settings, "publisher")
    sent = 0
    try:
        with progress("importing") as on_progress:
            for i, (count, body) in enumerate(bodies, 1):
                try:
                    msg = await nc.request(subject, body, timeout=TIMEOUT_S)
                except nats.errors.NoRespondersError:
                    raise no_responders(
                        settings, "intake", subject, "milestones serve intake"
                    ) from None
                reply = REPLY_DECODER.decode(msg.data)
                if as_json:
                    out(msg.data.decode())
                if not reply.accepted:
                    error = reply.error
                    code, message = (error.code, error.message) if error else ("?", "")
                    fail(
                        f"batch {i} of {len(bodies)} was refused ({code}: {message}); "
                        f"{sent} event(s) before it were accepted: fix the plan and import "
                        "it again (what was accepted is not sent twice)"
                    )
                    return 1
                sent += count
                if on_progress is not None:
                    on_progress(sent, len(events))
    finally:
        await nc.close()
    out(f"imported: {len(events)} event(s) in {len(bodies)} batch(es), all accepted")
    return 0


# -- export ---------------------------------------------------------------------------------------
def add_export_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    exp = sub.add_parser(
        "export",
        help="export a project's plan for MS Project (MSPDI XML)",
        description="Write a project's plan as MS Project XML (GET /projects/{id}/plan.xml, "
        "as a reader): phases, milestones, tasks, dependencies with lags, baselines.",
    )
    exp.add_argument("project", metavar="PROJECT", help="the project id")
    exp.add_argument("--format", choices=["mspdi"], default="mspdi", help="mspdi (the default)")
    exp.add_argument("--out", help="the file to write (default: stdout)")
    exp.add_argument("--api-url", help="the HTTP API (default: the one dev.json names)")
    exp.add_argument("--token", help="a reader's bearer token (default: dev.json's reader)")


async def export_command(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    import httpx

    from events.errors import StartupError
    from services.cli.client import dev_file

    dev = dev_file(settings)
    url = str(args.api_url or settings.api_url or (dev.http_url if dev else "")).rstrip("/")
    reader = dev.credentials.get("reader") if dev is not None else None
    token = args.token or settings.token or (reader.http_token if reader else None)
    if not url or not token:
        raise StartupError(
            "no HTTP API or reader token: run `milestones dev` (it writes dev.json), or pass "
            "--api-url and --token (MILESTONES_API_URL, MILESTONES_TOKEN)"
        )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
            response = await client.get(
                f"/projects/{args.project}/plan.xml", headers={"authorization": f"Bearer {token}"}
            )
    except httpx.HTTPError as exc:
        raise StartupError(
            f"cannot reach the HTTP API at {url} ({exc or type(exc).__name__}): is "
            "`milestones dev` running?"
        ) from None
    if response.status_code != 200:
        try:
            error = REPLY_DECODER.decode(response.content).error
            fail(f"{error.code}: {error.message}" if error else f"HTTP {response.status_code}")
        except msgspec.DecodeError:
            fail(f"{url} answered HTTP {response.status_code}")
        return 1
    if args.out:
        Path(args.out).write_bytes(response.content)
        out(f"wrote {args.out} ({len(response.content):,} bytes)")
    else:
        sys.stdout.buffer.write(response.content)
        sys.stdout.flush()
    return 0

"""The operating commands: publish CloudEvents (``send``), list refused inbox messages, rebuild
a read model, replay parked events, export the schemas."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import msgspec
import nats

from events import ENCODER, EVENT_TYPES, INBOUND_TYPES, REPLY_DECODER, Reply
from events.errors import StartupError
from events.subjects import command_subject, inbox_subject, milestone_subject, project_subject
from services.app.settings import Settings
from services.cli.output import fail, out, progress


# -- send ---------------------------------------------------------------------------------------
def coerce(value: str) -> object:
    if value[:1] in "[{":
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            pass
    return value


def cloudevent_from_args(args: argparse.Namespace) -> bytes:
    if args.type not in EVENT_TYPES:
        raise StartupError(
            f"unknown type {args.type!r}: one of {', '.join(sorted(INBOUND_TYPES))} "
            "(`milestones types` lists them with their fields)"
        )
    data: dict[str, object] = {}
    for pair in args.fields:
        key, sep, value = pair.partition("=")
        if not sep:
            raise StartupError(
                f"expected key=value, got {pair!r} (`milestones types {args.type}` lists the "
                "fields)"
            )
        data[key] = coerce(value)
    try:  # coerce "2" to 2 where the contract wants a number; the service validates again
        typed = msgspec.convert(data, EVENT_TYPES[args.type], strict=False)
        data = msgspec.to_builtins(typed)
        data.pop("type", None)
    except msgspec.ValidationError:
        pass  # send as typed; the reply says what is wrong
    ce = {
        "specversion": "1.0",
        "id": args.id or str(uuid.uuid4()),
        "source": args.source,
        "type": args.type,
        "time": args.time or dt.datetime.now(dt.UTC).isoformat(),
        "data": data,
    }
    if args.actor:
        ce["actor"] = args.actor
    return ENCODER.encode(ce)


def event_lines(path: str) -> list[bytes]:
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return [line for line in raw.splitlines() if line.strip()]


class Sent(msgspec.Struct, frozen=True):
    """What one line sent is, as far as the CLI says it back."""

    type: str
    id: str | None = None
    subject: str | None = None  # where its events are stored


def described(body: bytes) -> Sent:
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return Sent("unknown")
    if isinstance(decoded, list):
        return Sent("batch")
    if not isinstance(decoded, dict):
        return Sent("unknown")
    given = decoded.get("data")
    data: dict = given if isinstance(given, dict) else {}
    project, milestone = data.get("project_id"), data.get("milestone_id")
    subject = None
    if isinstance(project, str) and isinstance(milestone, str):
        subject = milestone_subject(project, milestone)
    elif isinstance(project, str):
        subject = project_subject(project)
    return Sent(str(decoded.get("type") or "unknown"), decoded.get("id"), subject)


def shown_reply(reply: Reply, sent: Sent, generated_id: str | None) -> None:
    """A reply in words: what was stored where (stdout), or why not (stderr)."""
    if reply.error is not None:
        message = reply.error.message
        if generated_id and message.startswith(f"CloudEvent {generated_id}: "):
            message = message.removeprefix(f"CloudEvent {generated_id}: ")  # an id nobody chose
        fail(f"refused ({reply.error.code}): {message}")
        return
    events = reply.events or []
    where = f" on {sent.subject}" if sent.subject else ""
    if not events:
        out(f"accepted {sent.type}: nothing new to store (already applied)")
    for n, ref in enumerate(events):
        lead = "accepted" if n == 0 else "   and"
        out(f"{lead} {ref.type} at position {ref.position}{where}")
    for generated in reply.webhook_secrets or []:
        out(f"webhook secret (shown once): {generated.secret or '-'} {generated.note}".rstrip())


async def send(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.client import connect_as, no_responders

    bodies = event_lines(args.file) if args.file else [cloudevent_from_args(args)]
    ids_chosen = bool(args.file or args.id)  # else a uuid of ours, not worth showing
    nc = await connect_as(settings, "publisher")
    refused = 0
    try:
        for body in bodies:
            sent = described(body)
            if args.inbox:
                ack = await nc.jetstream().publish(inbox_subject(sent.type), body)
                if args.json:
                    out(ENCODER.encode({"queued": True, "inbox_seq": ack.seq}).decode())
                else:
                    out(f"queued {sent.type} in the inbox at sequence {ack.seq}")
                continue
            subject = command_subject(sent.type)
            try:
                msg = await nc.request(subject, body, timeout=args.timeout)
            except nats.errors.NoRespondersError:
                raise no_responders(
                    settings, "intake", subject, "milestones serve intake"
                ) from None
            reply = REPLY_DECODER.decode(msg.data)
            refused += not reply.accepted
            if args.json:
                out(msg.data.decode())
            else:
                shown_reply(reply, sent, None if ids_chosen else sent.id)
    finally:
        await nc.close()
    return 1 if refused else 0


# -- rejections ---------------------------------------------------------------------------------
async def rejections(args: argparse.Namespace, settings: Settings) -> int:
    from events import REJECTION_DECODER
    from events.subjects import REJECTIONS, REJECTIONS_STREAM
    from services.cli.client import connect_service
    from services.eventlog.log import direct_batch

    nc = await connect_service(settings, "milestones-cli")
    try:
        msgs = await direct_batch(
            nc,
            REJECTIONS_STREAM,
            {"seq": args.after + 1, "next_by_subj": REJECTIONS, "batch": args.limit},
        )
    finally:
        await nc.close()
    for m in msgs:
        if args.json:
            out(m.data.decode())
            continue
        r = REJECTION_DECODER.decode(m.data)
        received = f"{r.received:%Y-%m-%d %H:%M:%S}"
        out(
            f"{m.seq:>6}  inbox#{r.inbox_seq:<6} {received}  {r.subject:<36} {r.code:<12} "
            f"{r.message}"
        )
    if not msgs and not args.json:
        out("no rejections")
    return 0


def configured_database(settings: Settings) -> str:
    """Configured URL, else the embedded cluster `milestones dev` keeps in the data dir."""
    if settings.database_url:
        return settings.database_url
    pg = Path(settings.data_dir).resolve() / "pg"
    if (pg / "postmaster.pid").exists():
        return f"postgresql://postgres:@/postgres?host={pg}"
    raise StartupError("no database: pass --database-url or set MILESTONES_DATABASE_URL")


T = TypeVar("T")


async def reachable_database(dsn: str, work: Awaitable[T]) -> T:
    """``work``, with a PostgreSQL that cannot be reached said in one line."""
    try:
        return await work
    except OSError as exc:  # refused, unreachable, no socket file
        raise StartupError(
            f"cannot reach PostgreSQL at {dsn} ({exc.strerror or exc}): is `milestones dev` "
            "running? (or pass --database-url)"
        ) from None


async def rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from projections import PROJECTIONS
    from projections.db import connect, ensure_schema
    from projections.rebuild import groups, rebuild
    from projections.runner_queries import checkpoints
    from services.app import runtime
    from services.cli.client import connect_service

    # "all": projections that read the same stream are rebuilt together, with one read
    chosen = (
        groups(list(PROJECTIONS.values()))
        if args.projection == "all"
        else [[PROJECTIONS[args.projection]]]
    )
    dsn = args.database_url or configured_database(settings)
    await reachable_database(dsn, ensure_schema(dsn, list(PROJECTIONS.values())))
    nc = await connect_service(settings, "milestones-rebuild")
    runtime.started()
    try:
        for group in chosen:
            names = ", ".join(p.name for p in group)
            with progress(f"rebuild {names}") as on_progress, runtime.replaying():
                position = await rebuild(group, dsn, nc, on_progress=on_progress)
            out(f"{names}: rebuilt to position {position} and swapped in")
    finally:
        await nc.close()
    # events the rebuilt read models cannot hold are parked, not fatal: say so, and what to do
    conn = await connect(dsn)
    try:
        rebuilt = {p.name for group in chosen for p in group}
        parked = {r["projection"]: r["parked"] for r in await checkpoints(conn)}
    finally:
        await conn.close()
    for name in sorted(rebuilt):
        if parked.get(name):
            out(
                f"{name}: {parked[name]} event(s) parked (`milestones parked {name}` lists them; "
                f"`milestones replay-parked {name}` applies them after a fix)"
            )
    return 0


async def replay_parked(args: argparse.Namespace, settings: Settings) -> int:
    from projections import PROJECTIONS
    from projections.rebuild import replay_parked

    dsn = args.database_url or configured_database(settings)
    with progress(f"replay {args.projection}") as on_progress:
        applied, remaining = await reachable_database(
            dsn, replay_parked(PROJECTIONS[args.projection], dsn, on_progress=on_progress)
        )
    out(f"{args.projection}: {applied} applied, {remaining} still parked")
    return 1 if remaining else 0


async def migrate(args: argparse.Namespace, settings: Settings) -> int:
    """The notifier's tables to the head migration (what every query and notifier start does),
    or with ``--sql`` the SQL that would take them there."""
    import asyncpg

    from projections.db import NOTIFY_SCHEMA, connect
    from services.notify import store

    dsn = args.database_url or configured_database(settings)
    try:
        conn = await connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(f"cannot reach PostgreSQL at {dsn}: {exc}") from exc
    try:
        if args.sql:
            sys.stdout.write(await store.pending_sql(conn))
            return 0
        found, head = await store.migrate(conn)
    finally:
        await conn.close()
    if found == head:
        out(f"notifier tables ({NOTIFY_SCHEMA}): at migration {head}, nothing to do")
    else:
        out(f"notifier tables ({NOTIFY_SCHEMA}): migrated from {found or 'nothing'} to {head}")
    return 0


def schema(args: argparse.Namespace, settings: Settings) -> int:
    from services.app.schema_export import write_all

    for path in write_all(Path(args.out)):
        out(str(path))
    return 0

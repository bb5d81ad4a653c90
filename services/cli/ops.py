"""The operating commands: publish CloudEvents (``send``), list refused inbox messages, rebuild
a read model, replay parked events, export the schemas."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid
from pathlib import Path

import msgspec

from events import ENCODER, EVENT_TYPES, REPLY_DECODER
from events.errors import StartupError
from events.subjects import command_subject, inbox_subject
from services.app.settings import Settings


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


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
        raise SystemExit(f"unknown type {args.type!r}; one of: {', '.join(sorted(EVENT_TYPES))}")
    data: dict[str, object] = {}
    for pair in args.fields:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {pair!r}")
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


async def send(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.client import connect_as

    bodies = event_lines(args.file) if args.file else [cloudevent_from_args(args)]
    nc = await connect_as(settings, "publisher")
    refused = 0
    try:
        for body in bodies:
            try:
                ctype = (
                    msgspec.json.decode(body).get("type", "unknown")
                    if body.lstrip()[:1] == b"{"
                    else "batch"
                )
            except msgspec.DecodeError:
                ctype = "unknown"
            if args.inbox:
                ack = await nc.jetstream().publish(inbox_subject(ctype), body)
                out(ENCODER.encode({"queued": True, "inbox_seq": ack.seq}).decode())
                continue
            msg = await nc.request(command_subject(ctype), body, timeout=args.timeout)
            reply = REPLY_DECODER.decode(msg.data)
            refused += not reply.accepted
            out(msg.data.decode())
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


async def rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from projections import PROJECTIONS
    from projections.db import connect, ensure_schema
    from projections.rebuild import groups, rebuild
    from projections.runner_queries import checkpoints
    from services.cli.client import connect_service

    # "all": projections that read the same stream are rebuilt together, with one read
    chosen = (
        groups(list(PROJECTIONS.values()))
        if args.projection == "all"
        else [[PROJECTIONS[args.projection]]]
    )
    dsn = args.database_url or configured_database(settings)
    await ensure_schema(dsn, list(PROJECTIONS.values()))
    nc = await connect_service(settings, "milestones-rebuild")
    try:
        for group in chosen:
            position = await rebuild(group, dsn, nc)
            out(
                f"{', '.join(p.name for p in group)}: rebuilt to position {position} and swapped in"
            )
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
    applied, remaining = await replay_parked(PROJECTIONS[args.projection], dsn)
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

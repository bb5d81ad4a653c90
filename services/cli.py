"""`milestones` — the command line: run the services, publish, inspect, export schemas."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys
import uuid
from pathlib import Path

import msgspec

from events import ENCODER, EVENT_TYPES, REPLY_DECODER
from services.config import Settings
from services.store import StartupError


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


# -- dev / serve ------------------------------------------------------------------------------
async def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from services import embedded, wiring

    log = wiring.log
    data_dir = Path(settings.data_dir).resolve()
    nats_port = args.nats_port or 4222
    if not embedded.port_is_free(nats_port):
        taken, nats_port = nats_port, embedded.free_port()
        log.info("port taken, using a free one", service="nats", taken=taken, port=nats_port)
    http_port = args.http_port or settings.http_port
    if not embedded.port_is_free(http_port, settings.http_host):
        taken, http_port = http_port, embedded.free_port(settings.http_host)
        log.info("port taken, using a free one", service="http", taken=taken, port=http_port)

    nats_server = await embedded.start_nats(data_dir / "nats", nats_port)
    pg = None
    try:
        database_url = args.database_url or settings.database_url
        if not database_url:
            pg = await asyncio.to_thread(embedded.EmbeddedPostgres(data_dir / "pg").start)
            database_url = pg.url
        settings = msgspec.structs.replace(
            settings, nats_url=nats_server.url, http_port=http_port, database_url=database_url
        )
        log.info("milestones dev ready", nats=settings.nats_url, http=f"http://{settings.http_host}:{http_port}",
                 database=database_url, data_dir=str(data_dir), stop="Ctrl-C")
        stop = _stop_on_signals()
        await wiring.run_intake(settings, stop)
        log.info("stopped cleanly")
        return 0
    finally:
        nats_server.stop()
        if pg is not None:
            await asyncio.to_thread(pg.stop)


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from services import wiring

    stop = _stop_on_signals()
    if args.service == "intake":
        await wiring.run_intake(settings, stop, with_http=not args.no_http)
    return 0


# -- send ---------------------------------------------------------------------------------------
def _coerce(value: str) -> object:
    if value[:1] in "[{":
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            pass
    return value


def _cloudevent_from_args(args: argparse.Namespace) -> bytes:
    if args.type not in EVENT_TYPES:
        raise SystemExit(f"unknown type {args.type!r}; one of: {', '.join(sorted(EVENT_TYPES))}")
    data: dict[str, object] = {}
    for pair in args.fields:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {pair!r}")
        data[key] = _coerce(value)
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


def _lines(path: str) -> list[bytes]:
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return [line for line in raw.splitlines() if line.strip()]


async def _send(args: argparse.Namespace, settings: Settings) -> int:
    import nats

    bodies = _lines(args.file) if args.file else [_cloudevent_from_args(args)]
    nc = await nats.connect(settings.nats_url, connect_timeout=5)
    refused = 0
    try:
        for body in bodies:
            try:
                ctype = msgspec.json.decode(body).get("type", "unknown") if body.lstrip()[:1] == b"{" else "batch"
            except msgspec.DecodeError:
                ctype = "unknown"
            if args.inbox:
                ack = await nc.jetstream().publish(f"milestones.inbox.{ctype}", body)
                _out(ENCODER.encode({"queued": True, "inbox_seq": ack.seq}).decode())
                continue
            msg = await nc.request(f"milestones.commands.{ctype}", body, timeout=args.timeout)
            reply = REPLY_DECODER.decode(msg.data)
            refused += not reply.accepted
            _out(msg.data.decode())
    finally:
        await nc.close()
    return 1 if refused else 0


# -- rejections ---------------------------------------------------------------------------------
async def _rejections(args: argparse.Namespace, settings: Settings) -> int:
    from services.intake_service import REJECTION_DECODER
    from services.store import REJECTIONS_STREAM, direct_batch
    from services.wiring import connect_nats

    nc = await connect_nats(settings.nats_url, "milestones-cli")
    try:
        msgs = await direct_batch(nc, REJECTIONS_STREAM,
                                  {"seq": args.after + 1, "next_by_subj": "milestones.rejections.>", "batch": args.limit})
    finally:
        await nc.close()
    for m in msgs:
        if args.json:
            _out(m.data.decode())
            continue
        r = REJECTION_DECODER.decode(m.data)
        _out(f"{m.seq:>6}  inbox#{r.inbox_seq:<6} {r.received:%Y-%m-%d %H:%M:%S}  {r.subject:<36} {r.code:<12} {r.message}")
    if not msgs and not args.json:
        _out("no rejections")
    return 0


def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from services.schema_export import write_all

    for path in write_all(Path(args.out)):
        _out(str(path))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="milestones", description=__doc__)
    p.add_argument("--nats-url", help="NATS server (env MILESTONES_NATS_URL)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dev", help="run everything on embedded servers")
    d.add_argument("--nats-port", type=int, help="default 4222, or a free port when taken")
    d.add_argument("--http-port", type=int, help="default 8080, or a free port when taken")
    d.add_argument("--database-url", help="PostgreSQL URL; default: an embedded PostgreSQL")
    d.add_argument("--data-dir", help="where embedded servers keep data (default .milestones)")

    s = sub.add_parser("serve", help="run one service against configured servers (deployments)")
    s.add_argument("service", choices=["intake"])
    s.add_argument("--no-http", action="store_true", help="intake: NATS only")

    snd = sub.add_parser("send", help="publish CloudEvents and print each reply")
    snd.add_argument("type", nargs="?", help="event type, e.g. TaskCompleted")
    snd.add_argument("fields", nargs="*", help="data fields as key=value")
    snd.add_argument("--file", help="CloudEvents, one JSON per line ('-' for stdin)")
    snd.add_argument("--source", default="milestones-cli")
    snd.add_argument("--actor")
    snd.add_argument("--id", help="CloudEvent id (default: a new uuid)")
    snd.add_argument("--time", help="RFC 3339 time (default: now)")
    snd.add_argument("--inbox", action="store_true", help="publish to the durable inbox instead")
    snd.add_argument("--timeout", type=float, default=10.0)

    r = sub.add_parser("rejections", help="list inbox messages the intake refused")
    r.add_argument("--after", type=int, default=0, help="only rejections after this sequence")
    r.add_argument("--limit", type=int, default=100)
    r.add_argument("--json", action="store_true")

    sc = sub.add_parser("schema", help="write JSON Schemas and the AsyncAPI document")
    sc.add_argument("--out", default="schemas")
    return p


COMMANDS = {"dev": _dev, "serve": _serve, "send": _send, "rejections": _rejections}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"nats_url": args.nats_url, "data_dir": getattr(args, "data_dir", None)}
    settings = Settings.from_env(**overrides)
    from services import logs

    logs.configure(settings.log_format, settings.log_level)
    if args.command == "send" and not args.file and not args.type:
        build_parser().error("send needs TYPE key=value ... or --file")
    try:
        if args.command == "schema":
            return _schema(args, settings)
        return asyncio.run(COMMANDS[args.command](args, settings))
    except StartupError as exc:
        sys.stderr.write(f"milestones: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""`milestones` — the command line: run the services, publish, inspect, export schemas."""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from events.errors import StartupError
from services.app.settings import Settings
from services.cli import audit, backup, ops, read
from services.cli import run as services_run
from services.cli.credentials import add_credentials_commands, credentials
from services.cli.deploy import add_deploy_commands, nats_config


# -- bench --------------------------------------------------------------------------------------
def _bench(args: argparse.Namespace) -> int:
    from bench.run import Options
    from bench.run import main as bench_main
    from services.auth.identity import NatsLogin, ServiceIdentity

    identity, auth_file = None, None
    if args.bench_nats_url:  # someone else's server: the services' login from the environment
        settings = Settings.from_env()
        if settings.nats_user:
            identity = ServiceIdentity(
                NatsLogin(settings.nats_user, settings.nats_password or ""),
                NatsLogin(settings.nats_system_user or "", settings.nats_system_password or ""),
            )
            if settings.nats_system_user:  # the intake can keep the server's accounts in sync
                auth_file = settings.nats_auth_file
    return bench_main(
        Options(
            projects=args.projects,
            inbox_projects=args.inbox_projects,
            publishers=args.publishers,
            events=args.events,
            freshness_rate=args.freshness_rate,
            freshness_seconds=args.freshness_seconds,
            query_rate=args.query_rate,
            query_seconds=args.query_seconds,
            raw_messages=args.raw_messages,
            nats_url=args.bench_nats_url,
            database_url=args.database_url,
            out=args.out,
            lazy=not args.no_lazy,
            auth_runs=args.auth_runs,
            auth_projects=args.auth_projects,
            nats_identity=identity,
            nats_auth_file=auth_file,
        )
    )


OPS_PORT_HELP = (
    "port of /health, /ready and /metrics (env MILESTONES_OPS_PORT, default 9464; 0: only on"
    " the HTTP API's port)"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="milestones", description=__doc__)
    p.add_argument("--nats-url", help="NATS server (env MILESTONES_NATS_URL)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dev", help="run everything on embedded servers")
    d.add_argument("--nats-port", type=int, help="default 4222, or a free port when taken")
    d.add_argument("--http-port", type=int, help="default 8080, or a free port when taken")
    d.add_argument("--ops-port", type=int, help=OPS_PORT_HELP)
    d.add_argument("--database-url", help="PostgreSQL URL; default: an embedded PostgreSQL")
    d.add_argument("--data-dir", help="where embedded servers keep data (default .milestones)")
    d.add_argument(
        "--demo",
        action="store_true",
        help="load the sample project atlas (phases, dependencies, "
        "reschedules, a baseline, status reports) and open /ui/projects/atlas",
    )

    s = sub.add_parser("serve", help="run one service against configured servers (deployments)")
    s.add_argument("service", choices=["intake", "projections", "query", "notifier"])
    s.add_argument("--no-http", action="store_true", help="NATS only (intake, query)")
    s.add_argument("--ops-port", type=int, help=OPS_PORT_HELP)

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

    read.add_read_commands(sub)
    audit.add_audit_commands(sub)  # after: adds export and verify under the existing `audit`
    add_credentials_commands(sub)
    add_deploy_commands(sub)
    backup.add_backup_commands(sub)
    from projections import PROJECTIONS

    rb = sub.add_parser(
        "rebuild", help="rebuild a read model from position 1 and swap it in (no downtime)"
    )
    rb.add_argument("projection", choices=[*PROJECTIONS, "all"])
    rb.add_argument("--database-url")
    b = sub.add_parser(
        "bench", help="benchmark intake, rebuild, freshness, queries beside the raw limits"
    )
    b.add_argument(
        "--projects",
        type=int,
        default=2000,
        help="projects of 10 milestones x 10 tasks (~181 messages each)",
    )
    b.add_argument(
        "--inbox-projects", type=int, default=200, help="projects sent through the inbox"
    )
    b.add_argument(
        "--publishers", type=int, default=256, help="concurrent request/reply publishers"
    )
    b.add_argument(
        "--events", type=int, default=0, help="top the stream up to N events before the rebuild"
    )
    b.add_argument("--freshness-rate", type=int, default=2000)
    b.add_argument("--freshness-seconds", type=float, default=10.0)
    b.add_argument("--query-rate", type=int, default=500)
    b.add_argument("--query-seconds", type=float, default=5.0)
    b.add_argument("--raw-messages", type=int, default=100_000)
    b.add_argument(
        "--bench-nats-url",
        help="use this NATS server (default: start a durable and a lazy one); the services log"
        " in as MILESTONES_NATS_USER, and publishers get credentials of their own when"
        " MILESTONES_NATS_SYSTEM_USER and MILESTONES_NATS_AUTH_FILE are set too",
    )
    b.add_argument(
        "--database-url",
        help="PostgreSQL server to create the bench database on (default: embedded)",
    )
    b.add_argument(
        "--no-lazy", action="store_true", help="skip the intake run on the lazy-fsync server"
    )
    b.add_argument(
        "--auth-runs",
        type=int,
        default=5,
        help="pairs of the authentication A/B after the main run: intake with and without"
        " NATS authentication, interleaved, fresh servers each (0 skips it)",
    )
    b.add_argument("--auth-projects", type=int, default=200, help="projects per run of the A/B")
    b.add_argument("--out", default="bench-results.json")
    rp = sub.add_parser("replay-parked", help="apply a projection's parked events again")
    rp.add_argument("projection", choices=list(PROJECTIONS))
    rp.add_argument("--database-url")
    mg = sub.add_parser(
        "migrate", help="bring the notifier's tables to this build's migration (services do it too)"
    )
    mg.add_argument("--database-url")
    mg.add_argument("--sql", action="store_true", help="print the SQL it would run, run nothing")
    return p


SERVICES = {
    "dev": services_run.dev,
    "serve": services_run.serve,
}  # run under supervise.run: bounded on SIGTERM
COMMANDS = {
    "send": ops.send,
    "rejections": ops.rejections,
    "rebuild": ops.rebuild,
    "replay-parked": ops.replay_parked,
    "migrate": ops.migrate,
    "credentials": credentials,
    "backup": backup.backup,
    "restore": backup.restore,
}
SYNC_COMMANDS = {"nats-config": nats_config}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"nats_url": args.nats_url, "data_dir": getattr(args, "data_dir", None)}
    try:
        settings = Settings.from_env(**overrides)
    except (ValueError, msgspec.ValidationError) as exc:  # e.g. MILESTONES_HTTP_PORT=abc
        sys.stderr.write(f"milestones: bad configuration: {exc}\n")
        return 2
    from services.app import logs

    logs.configure(settings.log_format, settings.log_level)
    if args.command == "send" and not args.file and not args.type:
        build_parser().error("send needs TYPE key=value ... or --file")
    try:
        if args.command == "schema":
            return ops.schema(args, settings)
        if args.command == "bench":
            return _bench(args)
        if args.command in SYNC_COMMANDS:
            return SYNC_COMMANDS[args.command](args, settings)
        if audit.is_audit_action(args):  # before the read commands: `audit` is one of them
            return asyncio.run(audit.run_audit(args, settings))
        if args.command in read.COMMANDS:
            return asyncio.run(read.run(args, settings))
        if args.command in SERVICES:
            from services.app import supervise

            command = SERVICES[args.command]
            return supervise.run(
                lambda shutdown: command(args, settings, shutdown), settings.shutdown_timeout_s
            )
        return asyncio.run(COMMANDS[args.command](args, settings))
    except StartupError as exc:
        sys.stderr.write(f"milestones: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130

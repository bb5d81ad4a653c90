"""``milestones bench``: its arguments and the call into ``bench.run``."""

from __future__ import annotations

import argparse

from services.app.settings import Settings


def add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    b.add_argument("--freshness-rate", type=int, default=2000, help="events/s of the freshness run")
    b.add_argument(
        "--freshness-seconds", type=float, default=10.0, help="how long the freshness run lasts"
    )
    b.add_argument("--query-rate", type=int, default=500, help="queries/s of the query run")
    b.add_argument("--query-seconds", type=float, default=5.0, help="how long the query run lasts")
    b.add_argument(
        "--raw-messages",
        type=int,
        default=100_000,
        help="messages of the raw NATS and JetStream measurements",
    )
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
    b.add_argument("--out", default="bench-results.json", help="where the results are written")


def bench(args: argparse.Namespace) -> int:
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

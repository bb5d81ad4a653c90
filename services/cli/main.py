# PYTHON_ARGCOMPLETE_OK
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
from services.cli.bench_command import add_bench_command, bench
from services.cli.credentials import add_credentials_commands, credentials
from services.cli.deploy import add_deploy_commands, nats_config
from services.cli.docs import document, subparsers
from services.cli.event_types import add_types_command, send_epilog, types
from services.cli.output import fail, use_terminal
from services.cli.plans import add_export_command, add_plan_commands, export_command, import_command
from services.cli.sign_off import add_sign_off_commands, sign_off

OPS_PORT_HELP = (
    "port of /health, /ready and /metrics (env MILESTONES_OPS_PORT, default 9464; 0: only on"
    " the HTTP API's port)"
)
DATABASE_HELP = (
    "PostgreSQL URL (env MILESTONES_DATABASE_URL; default: the one `milestones dev` runs)"
)
# Accepted before or after the subcommand: `milestones --nats-url X status p` and
# `milestones status p --nats-url X` are the same.
GLOBAL_OPTIONS: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "--nats-url",
        {
            "metavar": "URL",
            "help": "NATS server (env MILESTONES_NATS_URL; default: the URL `milestones dev` "
            "wrote to <data-dir>/dev.json, else nats://127.0.0.1:4222)",
        },
    ),
    (
        "--data-dir",
        {
            "metavar": "DIR",
            "help": "where `milestones dev` keeps its data and dev.json "
            "(env MILESTONES_DATA_DIR, default .milestones)",
        },
    ),
)
SHELLS = ("bash", "zsh", "fish", "tcsh", "powershell")


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """On the top parser (default None) and every subcommand (default SUPPRESS: a subcommand
    that is not given one keeps what came before it)."""
    for flag, options in GLOBAL_OPTIONS:
        parser.add_argument(flag, default=None, **options)  # type: ignore[arg-type]
    for _, sub, _ in subparsers(parser):
        for flag, options in GLOBAL_OPTIONS:
            sub.add_argument(flag, default=argparse.SUPPRESS, **options)


def add_running_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("dev", help="run everything on embedded servers")
    d.add_argument("--nats-port", type=int, help="default 4222, or a free port when taken")
    d.add_argument("--http-port", type=int, help="default 8080, or a free port when taken")
    d.add_argument("--ops-port", type=int, help=OPS_PORT_HELP)
    d.add_argument("--database-url", help="PostgreSQL URL; default: an embedded PostgreSQL")
    d.add_argument(
        "--demo",
        action="store_true",
        help="load the sample project atlas (phases, dependencies, reschedules, a baseline, "
        "status reports) and log the URL of its page (/ui/projects/atlas)",
    )
    s = sub.add_parser("serve", help="run one service against configured servers (deployments)")
    s.add_argument(
        "service",
        choices=["intake", "projections", "query", "notifier"],
        help="the service to run",
    )
    s.add_argument("--no-http", action="store_true", help="NATS only (intake, query)")
    s.add_argument("--ops-port", type=int, help=OPS_PORT_HELP)


def add_send_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    snd = sub.add_parser(
        "send",
        help="publish CloudEvents and say what each reply says",
        description="Publish a CloudEvent built from TYPE and key=value data fields (or the "
        "CloudEvents of a file) to the intake, and say what was stored where, or why not. "
        "Exit 0 when every event was accepted, 1 when one was refused, 2 when the intake "
        "cannot be reached.",
    )
    snd.add_argument("type", nargs="?", help="event type, e.g. TaskCompleted (see below)")
    snd.add_argument("fields", nargs="*", help="data fields as key=value")
    snd.add_argument("--file", help="CloudEvents, one JSON per line ('-' for stdin)")
    snd.add_argument("--source", default="milestones-cli", help="CloudEvent source")
    snd.add_argument("--actor", help="who did it (the CloudEvent actor attribute)")
    snd.add_argument("--id", help="CloudEvent id (default: a new uuid)")
    snd.add_argument("--time", help="RFC 3339 time (default: now)")
    snd.add_argument("--inbox", action="store_true", help="publish to the durable inbox instead")
    snd.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    snd.add_argument("--json", action="store_true", help="print each reply as JSON")
    snd.epilog = send_epilog()
    add_types_command(sub)

    r = sub.add_parser("rejections", help="list inbox messages the intake refused")
    r.add_argument("--after", type=int, default=0, help="only rejections after this sequence")
    r.add_argument("--limit", type=int, default=100, help="at most this many")
    r.add_argument("--json", action="store_true", help="each rejection as JSON")

    sc = sub.add_parser("schema", help="write JSON Schemas and the AsyncAPI document")
    sc.add_argument("--out", default="schemas", help="the directory to write (default schemas)")


def add_operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from projections import PROJECTIONS

    rb = sub.add_parser(
        "rebuild", help="rebuild a read model from position 1 and swap it in (no downtime)"
    )
    rb.add_argument(
        "projection", choices=[*PROJECTIONS, "all"], help="the read model, or all of them"
    )
    rb.add_argument("--database-url", help=DATABASE_HELP)
    add_bench_command(sub)
    rp = sub.add_parser("replay-parked", help="apply a projection's parked events again")
    rp.add_argument("projection", choices=list(PROJECTIONS), help="the read model")
    rp.add_argument("--database-url", help=DATABASE_HELP)
    mg = sub.add_parser(
        "migrate", help="bring the notifier's tables to this build's migration (services do it too)"
    )
    mg.add_argument("--database-url", help=DATABASE_HELP)
    mg.add_argument("--sql", action="store_true", help="print the SQL it would run, run nothing")
    c = sub.add_parser("completion", help="print the shell code that completes `milestones`")
    c.add_argument("shell", choices=SHELLS, help="your shell")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="milestones",
        description=__doc__,
        epilog="`milestones COMMAND --help` describes a command, with examples.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_running_commands(sub)
    add_send_commands(sub)
    read.add_read_commands(sub)
    audit.add_audit_commands(sub)  # after: adds export and verify under the existing `audit`
    add_credentials_commands(sub)
    add_sign_off_commands(sub)
    add_deploy_commands(sub)
    backup.add_backup_commands(sub)
    add_plan_commands(sub)
    add_export_command(sub)
    add_operator_commands(sub)
    add_global_options(p)
    document(p)
    return p


def completion(args: argparse.Namespace, settings: Settings) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["milestones"], shell=args.shell))
    return 0


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
    "approve": sign_off,
    "import": import_command,
    "export": export_command,
    "reject": sign_off,
}
SYNC_COMMANDS = {"nats-config": nats_config, "types": types, "completion": completion}


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "schema":
        return ops.schema(args, settings)
    if args.command == "bench":
        return bench(args)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:  # only the real command line is completed (argcomplete exits after)
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    overrides = {"nats_url": args.nats_url, "data_dir": args.data_dir}
    try:
        settings = Settings.from_env(**overrides)
    except (ValueError, msgspec.ValidationError) as exc:  # e.g. MILESTONES_HTTP_PORT=abc
        fail(f"bad configuration: {exc}")
        return 2
    from services.app import logs, runtime

    runtime.tune()  # every command: the services, a rebuild, the benchmark's load
    logs.configure(settings.log_format, settings.log_level)
    use_terminal()
    if args.command == "send" and not args.file and not args.type:
        parser.error("send needs TYPE key=value ... or --file (`milestones types` lists types)")
    try:
        return dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # the boundary: a server's failure is one line, never a trace
        code = failed(exc)
        if code is None:
            raise
        return code


def failed(exc: BaseException) -> int | None:
    """One line and exit code 2 for what goes wrong outside the CLI (a server that cannot be
    reached, does not answer, refuses); None: a bug, shown as a traceback."""
    import nats.errors

    if isinstance(exc, BrokenPipeError):  # `milestones types | head`
        return 0
    if isinstance(exc, StartupError):
        fail(str(exc))
    elif isinstance(exc, nats.errors.NoRespondersError):
        fail("no service answers on NATS: is `milestones dev` running, and --nats-url right?")
    elif isinstance(exc, nats.errors.TimeoutError | TimeoutError):
        fail("no answer in time: is the service overloaded, or stopped? (`milestones dev` logs)")
    elif isinstance(exc, nats.errors.Error):
        fail(f"NATS: {exc or type(exc).__name__}")
    elif isinstance(exc, OSError):
        fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
    else:
        return None
    return 2

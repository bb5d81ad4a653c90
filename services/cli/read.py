"""The CLI's read commands, built from the query registry: each asks the query service over NATS
(``milestones.query.<name>``) and prints a table, the query's own text, or JSON with ``--json``.

A query's positional arguments are its ``Cli.args``; every other parameter is a flag named after
it (``project_id`` is ``--project``, ``due_from`` is ``--due-from``) unless ``Cli.flags`` names it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from events import ENCODER
from services.app.settings import Settings
from services.cli.output import fail, out
from services.query.params import Spec, specs
from services.query.registry import QUERIES, Cli, Query
from services.query.text import table

SHORT = {"project_id": "project", "milestone_id": "milestone"}
# Where a parameter's type says nothing a reader needs (free text, mostly)
FLAG_HELP = {
    "phase": "only milestones of this phase",
    "actor": "only events of this actor (the self-declared CloudEvent actor)",
    "principal": "only events sent with this credential",
    "source": "only events of this CloudEvent source",
    "type": "only events of this type, e.g. TaskCompleted",
    "correlation_id": "only events of this correlation id",
    "baseline": "compare with this baseline (a BaselineSet name)",
    "stakeholder": "only deliveries to this stakeholder",
}
ASK_TIMEOUT_S = 35.0  # a query waits up to 30 s for --min-position


def grouped(queries: Iterable[Query[Any]] = QUERIES) -> dict[str, list[Query[Any]]]:
    """The queries of each command, its default (the one without ``when``) first."""
    commands: dict[str, list[Query[Any]]] = {}
    for query in queries:
        if query.cli is not None:
            commands.setdefault(query.cli.command, []).append(query)
    return {
        name: sorted(group, key=lambda q: q.cli is not None and q.cli.when is not None)
        for name, group in commands.items()
    }


COMMANDS = grouped()


def cli_of(query: Query[Any]) -> Cli:
    assert query.cli is not None, f"{query.name} has no CLI shape"
    return query.cli


def flag(query: Query[Any], spec: Spec) -> str:
    named = cli_of(query).flags.get(spec.name)
    return named or "--" + SHORT.get(spec.name, spec.name).replace("_", "-")


def described(spec: Spec) -> str:
    if spec.choices:
        listed = ",".join(spec.choices)
        return f"comma-separated: {listed}" if spec.kind == "list" else f"one of {listed}"
    return spec.description or FLAG_HELP.get(spec.name) or spec.name.replace("_", " ")


def shown_name(query: Query[Any], spec: Spec) -> str:
    """How the command line names a parameter: its flag, or a positional's metavar."""
    if spec.name in cli_of(query).args:
        return SHORT.get(spec.name, spec.name).upper()
    return flag(query, spec)


def in_cli_words(query: Query[Any], message: str) -> str:
    """The query service's message with the command line's names for its parameters: the one
    a message starts with (``min_position must be ...``), and every snake_case one in it
    (``pass min_position to wait``); plain words such as ``from`` only at the start."""
    names = {s.name: shown_name(query, s) for s in specs(query.params)}
    head, sep, rest = message.partition(" ")
    if head in names:
        message = names[head] + sep + rest
    for name, shown in names.items():
        if "_" in name:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}\b", shown, message)
    return message.replace("next_cursor", "the --cursor it printed")


def add_read_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for command, group in COMMANDS.items():
        add_command(sub, command, group)


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    command: str,
    group: list[Query[Any]],
) -> None:
    default = group[0]
    cmd = sub.add_parser(command, help=cli_of(default).help)
    cmd.add_argument("--json", action="store_true", help="JSON instead of a table")
    required = {s.name for s in specs(default.params) if s.required} & set(cli_of(default).args)
    seen: set[str] = set()
    for query in group:
        cli = cli_of(query)
        selects = "" if query is default else cli.when  # its argument picks this query
        fields = {s.name: s for s in specs(query.params) if s.name not in query.nats_only}
        for name in (*cli.args, *(n for n in fields if n not in cli.args)):
            if name in seen:
                continue
            seen.add(name)
            spec = fields[name]
            help_ = in_cli_words(query, cli.help if name == selects else described(spec))
            typed = int if spec.kind == "int" else str
            if name in cli.args:
                nargs = None if name in required else "?"
                metavar = SHORT.get(name, name).upper()
                cmd.add_argument(name, metavar=metavar, nargs=nargs, help=help_, type=typed)
            else:
                named = flag(query, spec)
                metavar = named.lstrip("-").replace("-", "_").upper()
                cmd.add_argument(named, dest=name, metavar=metavar, help=help_, type=typed)
        if selects and selects.startswith("--"):
            cmd.add_argument(selects, action="store_true", help=cli.help)


def chosen(
    args: argparse.Namespace, commands: Mapping[str, list[Query[Any]]] = COMMANDS
) -> tuple[Query[Any], dict[str, Any]]:
    """The query a parsed command line asks, and its parameters."""
    group = commands[args.command]

    def given(query: Query[Any]) -> bool:
        when = cli_of(query).when
        return bool(when and getattr(args, when.lstrip("-").replace("-", "_"), None))

    query = next((q for q in group[1:] if given(q)), group[0])
    params = {
        s.name: getattr(args, s.name)
        for s in specs(query.params)
        if getattr(args, s.name, None) is not None
    }
    return query, params


async def run(args: argparse.Namespace, settings: Settings) -> int:
    query, params = chosen(args)
    return show(query, await ask(settings, query, params), args.json)


async def ask(settings: Settings, query: Query[Any], params: dict[str, Any]) -> Any:
    import nats

    from services.cli.client import connect_as, no_responders

    nc = await connect_as(settings, query.role_for(params))
    try:
        msg = await nc.request(query.subject, ENCODER.encode(params), timeout=ASK_TIMEOUT_S)
    except nats.errors.NoRespondersError:
        raise no_responders(
            settings, "query service", query.subject, "milestones serve query"
        ) from None
    finally:
        await nc.close()
    return msgspec.json.decode(msg.data)


def show(query: Query[Any], result: Any, as_json: bool) -> int:
    if isinstance(result, dict) and result.get("accepted") is False:
        error = result["error"]
        fail(f"{error['code']}: {in_cli_words(query, error['message'])}")
        return 1
    if as_json:
        out(ENCODER.encode(result).decode())
        return 0
    cli = cli_of(query)
    data = result.get("data") if isinstance(result, dict) else result
    if cli.render is not None:
        out(cli.render(data))
    else:
        rows: list[Any] = data if isinstance(data, list) else [data]
        out(table(rows, cli.columns, cli.cells))
    if isinstance(result, dict) and result.get("stale"):
        position = result["position"]
        out(f"(stale: the read model is at position {position}, not yet at --min-position)")
    if isinstance(result, dict) and result.get("next_cursor"):
        out(f"(more: --cursor {result['next_cursor']})")
    return 0

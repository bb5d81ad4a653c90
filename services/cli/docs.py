"""What each subcommand's ``--help`` says beyond its one-line help: a description and examples.

``document`` walks the parser once it is built (the read commands come from the query registry,
``audit`` and ``credentials`` from their modules), so every subcommand gets its text here, in one
place, and a test checks that none is left without.
"""

from __future__ import annotations

import argparse

# command path -> examples (each line a command; `#` lines explain)
EXAMPLES: dict[str, str] = {
    "dev": "milestones dev\nmilestones dev --demo --data-dir /tmp/try-milestones",
    "serve": "milestones serve intake\nmilestones serve query --no-http",
    "send": (
        "milestones send ProjectCreated project_id=apollo name=Apollo\n"
        "milestones send TaskCompleted project_id=apollo milestone_id=m1 task_id=t1\n"
        "milestones send --file events.jsonl\n"
        "milestones types TaskCompleted   # the fields of a type"
    ),
    "types": "milestones types\nmilestones types TaskCompleted\nmilestones types --json",
    "rejections": "milestones rejections\nmilestones rejections --after 120 --json",
    "schema": "milestones schema --out schemas",
    "approve": (
        'milestones approve atlas go-no-go --as lee --meaning "approved for launch"\n'
        'MILESTONES_TOKEN=ms1.… milestones approve apollo launch --meaning "go" --json'
    ),
    "reject": 'milestones reject atlas go-no-go --as dana --reason "the load test failed"',
    "status": (
        "milestones status apollo\nmilestones status apollo m1\n"
        "milestones status apollo --health late,at_risk --sort due"
    ),
    "history": "milestones history m1\nmilestones history m1 --project apollo --json",
    "audit": (
        "milestones audit --project apollo --since 2026-11-01\n"
        "milestones audit export --out log.jsonl\nmilestones audit verify"
    ),
    "audit export": "milestones audit export --out log.jsonl",
    "audit verify": (
        "milestones audit verify\nmilestones audit verify --file log.jsonl --key key.pem"
    ),
    "report": "milestones report apollo\nmilestones report apollo --as-of 2026-11-01",
    "trend": "milestones trend apollo\nmilestones trend apollo --until 2026-12-31 --json",
    "critical-path": "milestones critical-path apollo\nmilestones critical-path apollo --json",
    "digest": "milestones digest apollo --preview\nmilestones digest apollo",
    "deliveries": "milestones deliveries --status failed\nmilestones deliveries --retry <id>",
    "projects": "milestones projects\nmilestones projects apollo --json",
    "subscriptions": "milestones subscriptions apollo",
    "reports": "milestones reports apollo\nmilestones reports apollo --milestone m1",
    "projections": "milestones projections\nmilestones projections --json",
    "parked": "milestones parked\nmilestones parked status",
    "credentials": (
        "milestones credentials create --role publisher --source ci\n"
        "milestones credentials list\nmilestones credentials token reader"
    ),
    "credentials create": (
        "milestones credentials create --role publisher --source ci --project apollo\n"
        "milestones credentials create --role reader --json\n"
        "milestones credentials create --role feed --project apollo  # prints the calendar URL"
    ),
    "credentials list": "milestones credentials list --all",
    "credentials token": (
        'curl -H "Authorization: Bearer $(milestones credentials token reader)" URL'
    ),
    "credentials url": 'curl "$(milestones credentials url)/projects" -H "Authorization: …"',
    "credentials feed-url": "milestones credentials feed-url  # paste into a calendar app",
    "credentials revoke": "milestones credentials revoke <credential-id> --reason 'laptop lost'",
    "nats-config": "milestones nats-config --dir /etc/milestones/nats --owner 1000",
    "backup": "milestones backup --out backups/2026-12-05",
    "restore": "milestones restore backups/2026-12-05",
    "rebuild": "milestones rebuild status\nmilestones rebuild all",
    "bench": "milestones bench --projects 200 --out bench.json",
    "replay-parked": "milestones replay-parked status",
    "migrate": "milestones migrate\nmilestones migrate --sql",
    "import": (
        "milestones import plan.xml --project apollo --dry-run\n"
        "milestones import plan.xml --project apollo --cancel-removed"
    ),
    "export": "milestones export apollo --format mspdi --out apollo.xml",
    "completion": (
        'eval "$(milestones completion bash)"     # in ~/.bashrc\n'
        'eval "$(milestones completion zsh)"      # in ~/.zshrc\n'
        "milestones completion fish | source      # in ~/.config/fish/config.fish"
    ),
}


def subparsers(parser: argparse.ArgumentParser, path: str = ""):
    """Every subcommand's parser with its path (``"credentials create"``), depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                here = f"{path} {name}".strip()
                yield here, sub, helps.get(name)
                yield from subparsers(sub, here)


def document(parser: argparse.ArgumentParser) -> None:
    """A description (the one-line help, as a sentence) and examples on every subcommand."""
    for path, sub, one_line in subparsers(parser):
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        if not sub.description and one_line:
            sub.description = one_line[:1].upper() + one_line[1:] + "."
        if example := EXAMPLES.get(path):
            shown = "examples:\n" + "\n".join(f"  {line}" for line in example.splitlines())
            sub.epilog = f"{sub.epilog}\n\n{shown}" if sub.epilog else shown

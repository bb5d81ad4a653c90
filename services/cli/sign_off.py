"""`milestones approve` / `milestones reject`: a decision gate's sign-off, over HTTP.

The CLI calls ``POST /projects/{project}/milestones/{milestone}/approvals`` with a bearer token:
``--as NAME`` takes the credential of that name from ``dev.json`` (``approvers``: what
`milestones dev` issues for its demo gate), else ``--token`` or ``MILESTONES_TOKEN``. The approver
is who that token names (README "Decision gates"). Exit 0 accepted, 1 refused, 2 unreachable.
"""

from __future__ import annotations

import argparse

import httpx
import msgspec

from events import ENCODER, REPLY_DECODER, Reply
from events.errors import StartupError
from services.app.settings import Settings
from services.cli.client import dev_file, dev_path
from services.cli.output import fail, out

DEFAULT_API = "http://127.0.0.1:8080"
TIMEOUT_S = 35.0


def add_sign_off_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for command, decision in (("approve", "approve"), ("reject", "reject")):
        p = sub.add_parser(
            command,
            help=f"{command} a decision gate, as the principal your token names",
            description=(
                f"{command.capitalize()} a decision gate's sign-off as whoever the token names "
                "(its credential's name, or a JWT's sub): `--as NAME` uses the credential of "
                "that name in dev.json, else --token or MILESTONES_TOKEN. Exit 0 when accepted, "
                "1 when refused, 2 when the HTTP API cannot be reached."
            ),
        )
        p.set_defaults(decision=decision)
        p.add_argument("project", metavar="PROJECT", help="the project id")
        p.add_argument("milestone", metavar="MILESTONE", help="the gate's milestone id")
        if decision == "approve":
            p.add_argument(
                "--meaning", required=True, help='what the signature means: "approved for launch"'
            )
            p.add_argument("--reason", help="why (optional)")
        else:
            p.add_argument("--reason", required=True, help="why it is rejected")
            p.add_argument("--meaning", help="what the rejection means (optional)")
        p.add_argument("--as", dest="as_name", metavar="NAME", help="a credential of dev.json")
        p.add_argument("--token", help="bearer token (env MILESTONES_TOKEN)")
        p.add_argument(
            "--api-url", help="the HTTP API (env MILESTONES_API_URL; default: dev.json's)"
        )
        p.add_argument("--id", help="Idempotency-Key: a retry with the same one stores nothing")
        p.add_argument("--json", action="store_true", help="print the reply as JSON")


def _token(args: argparse.Namespace, settings: Settings) -> str:
    if args.as_name:
        dev = dev_file(settings)
        entry = dev.approvers.get(args.as_name) if dev is not None else None
        if entry is None:
            known = ", ".join(sorted(dev.approvers)) if dev is not None else ""
            raise StartupError(
                f"no credential named {args.as_name} in {dev_path(settings)} "
                f"(approvers there: {known or 'none'}): use --token or MILESTONES_TOKEN"
            )
        return entry.http_token
    token = args.token or settings.token
    if not token:
        raise StartupError(
            "no token: pass --as NAME (a credential of dev.json), --token, or set "
            "MILESTONES_TOKEN (an admin issues one: `milestones credentials create`)"
        )
    return token


def _api_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.api_url or settings.api_url:
        return str(args.api_url or settings.api_url).rstrip("/")
    dev = dev_file(settings)
    return dev.http_url if dev is not None else DEFAULT_API


def shown(reply: Reply, args: argparse.Namespace) -> None:
    """The reply in words (stdout), or why not (stderr)."""
    if reply.error is not None:
        fail(f"refused ({reply.error.code}): {reply.error.message}")
        return
    events = reply.events or []
    if not events:
        out(f"{args.decision}: nothing new to store (already applied)")
    for n, ref in enumerate(events):
        lead = "accepted" if n == 0 else "   and"
        out(f"{lead} {ref.type} at position {ref.position}")


async def sign_off(args: argparse.Namespace, settings: Settings) -> int:
    url = _api_url(args, settings)
    body = {"decision": args.decision, "meaning": args.meaning, "reason": args.reason}
    headers = {"authorization": f"Bearer {_token(args, settings)}"}
    if args.id:
        headers["idempotency-key"] = args.id
    path = f"/projects/{args.project}/milestones/{args.milestone}/approvals"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
            response = await client.post(
                path,
                content=ENCODER.encode({k: v for k, v in body.items() if v is not None}),
                headers={**headers, "content-type": "application/json"},
            )
    except httpx.HTTPError as exc:
        raise StartupError(
            f"cannot reach the HTTP API at {url} ({exc or type(exc).__name__}): is "
            "`milestones dev` running? (--api-url or MILESTONES_API_URL to point elsewhere)"
        ) from None
    try:
        reply = REPLY_DECODER.decode(response.content)
    except msgspec.DecodeError:
        raise StartupError(
            f"{url} answered HTTP {response.status_code} without a Milestones reply: "
            "is --api-url the Milestones HTTP API?"
        ) from None
    if args.json:
        out(response.content.decode())
    else:
        shown(reply, args)
    return 0 if reply.accepted else 1

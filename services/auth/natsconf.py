"""The NATS server's accounts, written from the credentials: the server enforces least privilege.

Why accounts (README "Security"): every credential has a NATS account of its own (a slot,
``s0000``...) that can reach nothing but what it imports from the services' account
``MILESTONES``, and each import maps the subject the client uses to one that carries the slot:

    publisher   milestones.commands.<Type>  ->  milestones.commands.<slot>.<Type>
                milestones.inbox.<Type>     ->  milestones.inbox.<slot>.<Type>
    reader+     milestones.query.<name>     ->  milestones.query.<slot>.<name>

So the intake learns the sender from the subject, which the server wrote, never from the
message; this also holds for the JetStream-captured inbox (a stream strips
``Nats-Request-Info``). Replies go back through the import, and each account's ``_INBOX`` is
its own: nobody can subscribe to another client's replies. Only users of ``MILESTONES`` (the
services) can publish events or receipts, read a stream or call the JetStream API; per-user
permissions in each credential account make any other subject a permissions violation.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import structlog
from nats.aio.client import Client as NATS

from events.subjects import COMMANDS_PREFIX, INBOX_PREFIX, QUERY_PREFIX
from services.auth.credentials import Credential, CredentialStore, slot_name

log = structlog.get_logger("milestones.auth")

SERVICE_ACCOUNT = "MILESTONES"
SYSTEM_ACCOUNT = "SYS"
CREDENTIALS_FILE = "credentials.conf"


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid NATS config string


def service_accounts(
    service_user: str, service_bcrypt: str, system_user: str, system_bcrypt: str
) -> str:
    """The static part of the server's configuration: the services' account with its exports,
    the system account, and the include of the credentials file this module rewrites."""
    exports = ", ".join(
        f"{{service: {_q(p + '.>')}}}" for p in (COMMANDS_PREFIX, INBOX_PREFIX, QUERY_PREFIX)
    )
    return (
        "accounts {\n"
        f"  {SERVICE_ACCOUNT}: {{\n"
        "    jetstream: enabled\n"
        f"    users: [{{user: {_q(service_user)}, password: {_q(service_bcrypt)}}}]\n"
        f"    exports: [{exports}]\n"
        "  }\n"
        f"  {SYSTEM_ACCOUNT}: {{\n"
        f"    users: [{{user: {_q(system_user)}, password: {_q(system_bcrypt)}}}]\n"
        "  }\n"
        f"  include {_q(CREDENTIALS_FILE)}\n"
        "}\n"
        f"system_account: {SYSTEM_ACCOUNT}\n"
    )


_PUBLISH = {
    "publisher": [f"{COMMANDS_PREFIX}.*", f"{INBOX_PREFIX}.*"],
    "reader": [f"{QUERY_PREFIX}.*"],
    "auditor": [f"{QUERY_PREFIX}.*"],
    "admin": [f"{QUERY_PREFIX}.*"],
}


def _slot(account: str, users: str) -> str:
    imports = ", ".join(
        f"{{service: {{account: {SERVICE_ACCOUNT}, subject: {_q(f'{p}.{account}.*')}}}, "
        f"to: {_q(p + '.*')}}}"
        for p in (COMMANDS_PREFIX, INBOX_PREFIX, QUERY_PREFIX)
    )
    return f"{_q(account)}: {{\n  users: [{users}]\n  imports: [{imports}]\n}}\n"


def credential_accounts(credentials: Iterable[Credential], slots: int) -> str:
    """The credentials file: ``slots`` accounts, each holding the user of at most one live
    credential. Why slots: nats-server wires the service imports of an account only when it
    starts (an account added by a reload gets none, measured on 2.15.1), while the users of an
    existing account can change at any reload. So every account exists from the start with
    all three imports, and a user's permissions say which of them its role may use."""
    users: dict[str, str] = {}
    for c in credentials:
        if not c.active or c.nats_password_bcrypt is None or c.nats_account is None:
            continue
        if c.role not in _PUBLISH:
            continue
        permissions = (
            f"{{publish: {{allow: {json.dumps(_PUBLISH[c.role])}}}, "
            'subscribe: {allow: ["_INBOX.>"]}}'
        )
        users[c.nats_account] = (
            f"{{user: {_q(c.id)}, password: {_q(c.nats_password_bcrypt)}, "
            f"permissions: {permissions}}}"
        )
    count = max([slots, *(int(a[1:]) + 1 for a in users)])
    header = "# written by Milestones from the credentials in the event log: do not edit\n"
    return header + "".join(_slot(slot_name(i), users.get(slot_name(i), "")) for i in range(count))


def write_atomically(path: Path, text: str) -> bool:
    """Replace ``path`` by ``text`` (mode 0600); False when it already held exactly that."""
    if path.exists() and path.read_text() == text:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return True


async def reload_servers(system: NATS, timeout: float = 2.0) -> int:
    """Ask every server of the cluster to reload its configuration (system account API)."""
    ids: list[str] = []
    inbox = system.new_inbox()
    sub = await system.subscribe(inbox)
    await system.publish("$SYS.REQ.SERVER.PING.IDZ", b"", reply=inbox)
    try:
        while True:  # every server answers; stop when none has for a moment
            msg = await sub.next_msg(timeout=0.25 if ids else timeout)
            ids.append(json.loads(msg.data)["id"])
    except TimeoutError:
        pass
    except Exception as exc:  # nats-py raises its own TimeoutError subclass
        if "timeout" not in type(exc).__name__.lower():
            raise
    finally:
        await sub.unsubscribe()
    for server_id in ids:
        reply = await system.request(f"$SYS.REQ.SERVER.{server_id}.RELOAD", b"", timeout=timeout)
        error = json.loads(reply.data).get("error")
        if error:
            raise RuntimeError(f"nats-server {server_id} refused to reload: {error}")
    return len(ids)


class AccountsSync:
    """Keeps the server's credentials file equal to the live credentials, reloading on change."""

    def __init__(self, store: CredentialStore, path: Path, system: NATS) -> None:
        self.store = store
        self.path = path
        self.system = system
        self._dirty = asyncio.Event()
        self.synced = asyncio.Condition()
        self.position = 0  # the credential position the server's accounts are known to include

    async def run(self, stop: asyncio.Event) -> None:
        self.store.on_change(self._dirty.set)
        self._dirty.set()  # the file may be stale from before this start
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                dirty = asyncio.create_task(self._dirty.wait())
                await asyncio.wait({dirty, stopping}, return_when=asyncio.FIRST_COMPLETED)
                dirty.cancel()
                if stop.is_set():
                    break
                self._dirty.clear()
                await self.sync()
        finally:
            stopping.cancel()

    async def sync(self) -> None:
        position = self.store.position
        text = credential_accounts(self.store.credentials(), self.store.slots)
        if write_atomically(self.path, text):
            servers = await reload_servers(self.system)
            log.info("nats accounts reloaded", servers=servers, file=str(self.path))
        async with self.synced:
            self.position = max(self.position, position)
            self.synced.notify_all()

    async def wait_for(self, position: int, timeout: float = 10.0) -> None:
        """Until the server's accounts include every credential event up to ``position``."""
        async with self.synced:
            await asyncio.wait_for(self.synced.wait_for(lambda: self.position >= position), timeout)

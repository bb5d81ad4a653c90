"""Webhook subscriptions at the intake, after parsing and before deciding: the target must be
one the policy allows (``services.notify.targets``), the secret is sealed
(``services.notify.secretbox``), so neither an unsafe target nor a clear secret reaches the log,
and the payload format is fixed (``payload``; absent means today's default, ``cloudevents.v1``).

**Generated secrets.** A subscription whose ``secret`` is absent or ``"generate"`` gets a new
Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes), sealed into the event like
any other, and its clear value is shown in the reply to that message and never again
(``Reply.webhook_secrets``). Shown only when the stored event holds the very sealed value this
message made (``disclose`` reads it back): a repeat of the same CloudEvent id is answered from
its receipt, appends nothing, and gets a note instead of a secret (the first one cannot be shown
again: it is sealed, and its clear value was never kept); so does a subscription that exists
already (nothing is appended, its secret is unchanged). A path without a reply (the inbox)
generates nothing: a missing secret stays missing (the notifier's key signs those webhooks) and
``"generate"`` is refused.

Refusals are ``invalid`` (HTTP 400): the message says what is wrong and what to do. A secret
when no key is configured is refused the same way, naming the setting the operator must set
(``unavailable`` would make the inbox redeliver it forever, holding up everything behind it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import structlog

from events import Reply, StakeholderSubscribed, decode_stored, project_subject
from events.envelope import GeneratedSecret
from events.errors import Rejected
from events.project import GENERATE, PAYLOAD_DEFAULT, SECRET_CLEAR_MAX, SECRET_CLEAR_MIN
from services.eventlog.log import StoredMessage
from services.intake.round import Command, event_id
from services.notify.secretbox import Keyring, keyring_from_settings, subscription_aad
from services.notify.signing import check_secret, generate_secret
from services.notify.targets import TargetPolicy, TargetRefused

log = structlog.get_logger("milestones.intake")

SHOWN = (
    "generated for this subscription and shown in this reply only: keep it now (receivers "
    "verify webhooks with it); it is stored encrypted and cannot be shown again"
)
REPEAT = (
    "this CloudEvent (source and id) was handled before: its secret was shown in the first "
    "reply only and cannot be shown again; if it was lost, unsubscribe and subscribe again with "
    "a new CloudEvent id"
)
EXISTS = (
    "this stakeholder is subscribed at this url already: nothing was stored and its secret is "
    "unchanged; to replace it, unsubscribe and subscribe again"
)
UNCONFIRMED = (
    "the subscription was stored, but reading it back to confirm this message stored it failed, "
    "so the secret is not shown: unsubscribe and subscribe again for a new one"
)


class SubjectReader(Protocol):
    """What ``disclose`` needs of the event log (``services.eventlog.log.EventLog``)."""

    async def read_subject(
        self, subject: str, after: int = 0, page: int = 1000
    ) -> list[StoredMessage]: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    commands: list[Command]
    # command index -> the clear secret generated for it (repr=False: never in a traceback)
    generated: Mapping[int, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Webhooks:
    keyring: Keyring | None = None  # None: subscriptions with a secret are refused
    targets: TargetPolicy = field(default_factory=TargetPolicy)

    def prepare(self, commands: Sequence[Command]) -> list[Command]:
        """``admit`` for a path that sends no reply: nothing is generated."""
        return self.admit(commands, answered=False).commands

    def admit(self, commands: Sequence[Command], *, answered: bool) -> Prepared:
        """The commands, with every subscription's target checked, its payload format set and
        its secret sealed (generated first when absent or "generate" and ``answered``); raises
        ``Rejected`` for the first one that cannot be accepted."""
        numbered = len(commands) > 1
        out: list[Command] = []
        generated: dict[int, str] = {}
        for n, c in enumerate(commands):
            if isinstance(c.fact, StakeholderSubscribed):
                where = f"CloudEvent #{n + 1} (id {c.ce.id})" if numbered else ""
                c, clear = self._subscription(c, where, answered)
                if clear is not None:
                    generated[n] = clear
            out.append(c)
        return Prepared(out, generated)

    def _subscription(
        self, command: Command, where: str, answered: bool
    ) -> tuple[Command, str | None]:
        fact = command.fact
        assert isinstance(fact, StakeholderSubscribed)
        prefix = f"{where}: " if where else ""
        try:
            self.targets.check_url(fact.url)
        except TargetRefused as refused:
            raise Rejected("invalid", prefix + refused.reason) from None
        fact = msgspec.structs.replace(fact, payload=fact.payload or PAYLOAD_DEFAULT)
        secret, generated = fact.secret, None
        if secret is not None and self.keyring is None:
            raise Rejected(
                "invalid",
                f"{prefix}webhook secrets are encrypted before they are stored, and this "
                "Milestones has no key: the operator must set MILESTONES_SECRET_KEY (or "
                "MILESTONES_SECRET_KEY_FILE); or subscribe without a secret",
            )
        if secret == GENERATE and not answered:
            raise Rejected(
                "invalid",
                f'{prefix}secret "generate" needs a reply to return the secret in, and the inbox '
                "sends none: subscribe through milestones.commands or HTTP POST /events, or send "
                "a secret of your own",
            )
        if secret == GENERATE or (secret is None and answered and self.keyring is not None):
            secret = generated = generate_secret()
        if secret is None:  # no key, or no reply to show one in: the notifier's key signs
            return dataclasses.replace(command, fact=fact), None
        if not SECRET_CLEAR_MIN <= len(secret) <= SECRET_CLEAR_MAX:
            bound = "limit" if len(secret) > SECRET_CLEAR_MAX else "minimum"
            limit = SECRET_CLEAR_MAX if bound == "limit" else SECRET_CLEAR_MIN
            raise Rejected(
                "invalid",
                f"{prefix}secret is {len(secret)} characters; the {bound} is {limit}: send "
                f'{SECRET_CLEAR_MIN}-{SECRET_CLEAR_MAX} characters, or "generate" (the service '
                "makes one and returns it once)",
            )
        if (why := check_secret(secret)) is not None:
            raise Rejected(
                "invalid",
                f"{prefix}{why}: send whsec_ + base64 of 24-64 random bytes, or "
                '"generate" (the service makes one and returns it once)',
            )
        assert self.keyring is not None  # checked above
        aad = subscription_aad(fact.project_id, fact.stakeholder, fact.url)
        sealed = msgspec.structs.replace(fact, secret=self.keyring.seal(secret, aad))
        return dataclasses.replace(command, fact=sealed), generated

    async def disclose(self, reply: Reply, prepared: Prepared, events: SubjectReader) -> Reply:
        """The reply, with each generated secret shown if this message stored it (module
        docstring), or a note saying why not."""
        if not prepared.generated or not reply.accepted:
            return reply  # refused: nothing was stored, the generated values are dropped
        refs = {ref.id: ref for ref in reply.events or []}
        out = []
        for n, clear in prepared.generated.items():
            command = prepared.commands[n]
            fact = command.fact
            assert isinstance(fact, StakeholderSubscribed)
            ref = refs.get(event_id(command.ce, 0))  # a subscription decides one event or none
            if ref is None or ref.type != "StakeholderSubscribed":
                out.append(GeneratedSecret(id=command.ce.id, note=EXISTS))
                continue
            try:
                stored = await events.read_subject(
                    project_subject(fact.project_id), after=ref.position - 1, page=1
                )
                there = stored[0] if stored and stored[0].seq == ref.position else None
                kept = None if there is None else decode_stored(there.data).data
            except Exception as exc:  # noqa: BLE001 - the reply stands; only the secret is held back
                log.warning("generated secret not confirmed", ce_id=command.ce.id, error=repr(exc))
                out.append(GeneratedSecret(id=command.ce.id, note=UNCONFIRMED))
                continue
            # the sealed value has a random nonce: equal only when this very message stored it
            if isinstance(kept, StakeholderSubscribed) and kept.secret == fact.secret:
                out.append(GeneratedSecret(id=command.ce.id, secret=clear, note=SHOWN))
            else:
                out.append(GeneratedSecret(id=command.ce.id, note=REPEAT))
        return msgspec.structs.replace(reply, webhook_secrets=out)


# The safe default: public https targets only, and no key (so secrets are refused, not stored).
STRICT = Webhooks()


def configured(secret_key: str | None, secret_key_file: str | None, allow_hosts: str) -> Webhooks:
    """From the settings (``MILESTONES_SECRET_KEY`` or ``_FILE``, ``_WEBHOOK_ALLOW_HOSTS``)."""
    return Webhooks(
        keyring_from_settings(secret_key, secret_key_file), TargetPolicy.from_setting(allow_hosts)
    )

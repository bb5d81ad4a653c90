"""Webhook subscriptions at the intake, after parsing and before deciding: the target must be
one the policy allows (``services.notify.targets``), and the secret is sealed
(``services.notify.secretbox``), so neither an unsafe target nor a clear secret reaches the log.

Refusals are ``invalid`` (HTTP 400): the message says what is wrong and what to do. A secret
when no key is configured is refused the same way, naming the setting the operator must set
(``unavailable`` would make the inbox redeliver it forever, holding up everything behind it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from events import StakeholderSubscribed
from events.errors import Rejected
from events.project import SECRET_CLEAR_MAX
from services.intake.round import Command
from services.notify.secretbox import Keyring, keyring_from_settings, subscription_aad
from services.notify.targets import TargetPolicy, TargetRefused


@dataclass(frozen=True, slots=True)
class Webhooks:
    keyring: Keyring | None = None  # None: subscriptions with a secret are refused
    targets: TargetPolicy = field(default_factory=TargetPolicy)

    def prepare(self, commands: Sequence[Command]) -> list[Command]:
        """The commands, with every subscription's target checked and its secret sealed;
        raises ``Rejected`` for the first one that cannot be accepted."""
        numbered = len(commands) > 1
        return [
            self._subscription(c, f"CloudEvent #{n} (id {c.ce.id})" if numbered else "")
            if isinstance(c.fact, StakeholderSubscribed)
            else c
            for n, c in enumerate(commands, 1)
        ]

    def _subscription(self, command: Command, where: str) -> Command:
        fact = command.fact
        assert isinstance(fact, StakeholderSubscribed)
        prefix = f"{where}: " if where else ""
        try:
            self.targets.check_url(fact.url)
        except TargetRefused as refused:
            raise Rejected("invalid", prefix + refused.reason) from None
        if fact.secret is None:
            return command
        if len(fact.secret) > SECRET_CLEAR_MAX:
            raise Rejected(
                "invalid",
                f"{prefix}secret is {len(fact.secret)} characters; the limit is {SECRET_CLEAR_MAX}",
            )
        if self.keyring is None:
            raise Rejected(
                "invalid",
                f"{prefix}webhook secrets are encrypted before they are stored, and this "
                "Milestones has no key: the operator must set MILESTONES_SECRET_KEY (or "
                "MILESTONES_SECRET_KEY_FILE); or subscribe without a secret",
            )
        aad = subscription_aad(fact.project_id, fact.stakeholder, fact.url)
        sealed = msgspec.structs.replace(fact, secret=self.keyring.seal(fact.secret, aad))
        return dataclasses.replace(command, fact=sealed)


# The safe default: public https targets only, and no key (so secrets are refused, not stored).
STRICT = Webhooks()


def configured(secret_key: str | None, secret_key_file: str | None, allow_hosts: str) -> Webhooks:
    """From the settings (``MILESTONES_SECRET_KEY`` or ``_FILE``, ``_WEBHOOK_ALLOW_HOSTS``)."""
    return Webhooks(
        keyring_from_settings(secret_key, secret_key_file), TargetPolicy.from_setting(allow_hosts)
    )

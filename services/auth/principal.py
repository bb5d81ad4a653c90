"""A principal: who a request or message comes from, learned from the transport, and what it may do.

Roles (README "Security"): ``publisher`` sends events for the sources (and optionally the
projects) its credential names; ``reader`` queries and opens the dashboard; ``auditor`` is a
reader who may also export the audit trail and verify it; ``admin`` is an auditor who may also
rebuild, replay, retry deliveries, send digests and manage credentials; a ``feed`` credential is
a read-only token that may travel in a URL (calendar clients), limited to its projects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["publisher", "reader", "auditor", "admin", "feed"]
Via = Literal["token", "jwt", "nats", "system"]  # how the principal was authenticated
ROLES: tuple[Role, ...] = ("publisher", "reader", "auditor", "admin", "feed")
# reader < auditor < admin: each may do what the one before it may. Publishers and feeds stand
# apart: a publisher reads nothing, a feed reads only its projects' calendar.
_READ_RANK = {"reader": 1, "auditor": 2, "admin": 3}


@dataclass(frozen=True, slots=True)
class Principal:
    id: str  # the credential id, ``jwt:<sub>`` for an identity provider's user, or ``system:<x>``
    role: Role
    sources: frozenset[str] = field(default_factory=frozenset)  # publisher: allowed sources
    projects: frozenset[str] = field(default_factory=frozenset)  # empty: every project
    via: Via = "token"
    # who it is to people: a credential's ``name``, an identity provider user's ``sub``, or
    # "milestones" for the services. Approvers of a gate are named this way (README "Decision
    # gates"); only admins issue credentials, so the names are controlled.
    name: str = ""

    @property
    def signer(self) -> str:
        """The name an approval is recorded under (the id when no name is known)."""
        return self.name or self.id

    def may(self, need: Role) -> bool:
        """Whether this principal holds ``need`` (readers' roles are ranked)."""
        if need in _READ_RANK:
            return _READ_RANK.get(self.role, 0) >= _READ_RANK[need]
        return self.role == need or (need == "publisher" and self.via == "system")

    def may_source(self, source: str) -> bool:
        return self.via == "system" or source in self.sources

    def may_project(self, project_id: str) -> bool:
        return not self.projects or project_id in self.projects

    def may_projects(self, project_ids: Iterable[str]) -> bool:
        return all(self.may_project(p) for p in project_ids)


# The services' own identity: messages the services make themselves (deadline misses, the demo),
# and requests inside the services' NATS account, which only the services can reach.
SERVICE = Principal(id="system:milestones", role="admin", via="system", name="milestones")


def from_subject(subject: str, prefix: str, auth: Authenticator) -> tuple[Principal | None, str]:
    """Who sent a message on ``<prefix>.<account>.<name>`` (the account token was written by
    the server's import mapping, ``services.auth.natsconf``), and the name it addressed.
    ``<prefix>.<name>`` is reachable only inside the services' own account: the services.
    A credential that is unknown or revoked gives None."""
    tokens = subject[len(prefix) + 1 :].split(".")
    if len(tokens) == 1:
        return SERVICE, tokens[0]
    if len(tokens) == 2:
        return auth.by_nats_account(tokens[0]), tokens[1]
    return None, tokens[-1]


UNKNOWN_CREDENTIAL = (
    "the credential this came with is unknown or revoked: ask an admin for a new one"
)


class Authenticator(Protocol):
    """What the edges ask: who holds this bearer token (a Milestones token or a JWT)?"""

    async def bearer(self, token: str) -> Principal | None:
        """The principal the token names, or None when it is unknown, revoked or invalid."""
        ...

    def by_credential(self, credential_id: str) -> Principal | None:
        """A live (not revoked) credential by id (a dashboard session checks it each request)."""
        ...

    def by_nats_account(self, account: str) -> Principal | None:
        """The live credential of a NATS account slot: the subject token the server mapped."""
        ...


class _Nobody:
    """Knows no credential: where no authenticator is configured, only the services get in."""

    async def bearer(self, token: str) -> Principal | None:
        return None

    def by_credential(self, credential_id: str) -> Principal | None:
        return None

    def by_nats_account(self, account: str) -> Principal | None:
        return None


NOBODY: Authenticator = _Nobody()

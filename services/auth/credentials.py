"""Credentials: issued and revoked as events in the log, held in memory by every service that
authenticates, so authentication never waits on PostgreSQL and a revocation is seen at once.

A credential has one random secret. Over HTTP it travels as the bearer token
``ms1.<credential_id>.<secret>`` (checked against the SHA-256 in the log: the secret is 256
random bits, so a fast hash is enough); over NATS it is the password of user
``<credential_id>``, which the NATS server checks against the bcrypt hash in its accounts
file (``services.auth.natsconf``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import bcrypt
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import APIError

from events import ENCODER
from events.errors import Rejected
from events.identity import (
    CREDENTIAL_DECODER,
    CredentialIssued,
    CredentialRevoked,
    CredentialRole,
    StoredCredentialEvent,
)
from events.subjects import CREDENTIALS, EVENTS_STREAM, credential_subject
from services.auth.principal import Principal, Via

log = structlog.get_logger("milestones.auth")

TOKEN_PREFIX = "ms1"
SOURCE = "milestones/credentials"
_SLUG = re.compile(r"[^A-Za-z0-9]+")


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits; base64url never contains "."


def http_token(credential_id: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}.{credential_id}.{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    prefix, _, rest = token.partition(".")
    credential_id, _, secret = rest.partition(".")
    if prefix != TOKEN_PREFIX or not credential_id or not secret:
        return None
    return credential_id, secret


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bcrypt_hash(secret: str) -> str:
    # cost 10: the server checks it once per connection (~50 ms), never per message
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=10)).decode()


def slot_name(index: int) -> str:
    return f"s{index:04d}"


def new_credential_id(role: str, name: str) -> str:
    slug = _SLUG.sub("-", name).strip("-").lower()[:40] or "x"
    return f"{role}-{slug}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Credential:
    id: str
    role: CredentialRole
    name: str
    sources: tuple[str, ...]
    projects: tuple[str, ...]
    token_sha256: str
    nats_password_bcrypt: str | None
    issued_at: dt.datetime
    issued_by: str
    position: int  # the issuing event's stream sequence
    nats_account: str | None = None
    revoked_at: dt.datetime | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def principal(self, via: Via = "token") -> Principal:
        return Principal(
            id=self.id,
            role=self.role,
            sources=frozenset(self.sources),
            projects=frozenset(self.projects),
            via=via,
            name=self.name,
        )


class Issued:
    """A new credential and its secret: shown once to whoever issued it, stored nowhere."""

    def __init__(self, credential: Credential, secret: str) -> None:
        self.credential = credential
        self.secret = secret

    @property
    def http_token(self) -> str:
        return http_token(self.credential.id, self.secret)

    def as_dev_entry(self, creds_path: str | None = None) -> dict:
        """The shape of one role's entry in ``dev.json`` (README "Security")."""
        c = self.credential
        entry: dict = {"id": c.id, "role": c.role, "http_token": self.http_token}
        if c.nats_password_bcrypt is not None:
            entry["nats"] = {"user": c.id, "password": self.secret}
        entry["sources"] = list(c.sources)
        entry["projects"] = list(c.projects)
        return entry


def apply(
    known: dict[str, Credential], event: StoredCredentialEvent, position: int
) -> Credential | None:
    """Evolve the credential set by one stored event; returns the credential it changed."""
    data = event.data
    if isinstance(data, CredentialIssued):
        known[data.credential_id] = Credential(
            id=data.credential_id,
            role=data.role,
            name=data.name,
            sources=tuple(data.sources),
            projects=tuple(data.projects),
            token_sha256=data.token_sha256,
            nats_password_bcrypt=data.nats_password_bcrypt,
            issued_at=event.recordedtime,
            issued_by=event.principal or "unknown",
            position=position,
            nats_account=data.nats_account,
        )
        return known[data.credential_id]
    current = known.get(data.credential_id)
    if current is None or not current.active:
        return None
    known[data.credential_id] = changed = dataclasses.replace(
        current, revoked_at=event.recordedtime, revoked_by=event.principal or "unknown"
    )
    return changed


class CredentialStore:
    """Every credential, followed live from the log; the ``Authenticator`` of the edges."""

    def __init__(
        self,
        nc: NATS,
        jwt: Callable[[str], Awaitable[Principal | None]] | None = None,
        *,
        slots: int = 1000,
    ) -> None:
        self.slots = slots  # NATS account slots the server was configured with
        self.nc = nc
        self.js = nc.jetstream()
        self.known: dict[str, Credential] = {}
        self.position = 0  # the last credential event applied
        self.jwt = jwt  # async (token) -> Principal | None, from services.auth.jwt
        self._changed = asyncio.Condition()
        self._listeners: list[Callable[[], None]] = []
        self._applied = 0  # credential messages seen, readable or not
        self._by_slot: dict[str, Principal] = {}  # NATS account slot -> its live credential
        self.live = False  # caught up with the log: changes from now on are news
        self._sub: JetStreamContext.PushSubscription | None = None

    # -- following the log -----------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe, then return once every credential stored so far is known."""
        info = await self.js.stream_info(EVENTS_STREAM, subjects_filter=CREDENTIALS)
        stored = sum((info.state.subjects or {}).values())
        self._sub = await self.js.subscribe(
            CREDENTIALS,
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            cb=self._on_message,
        )
        await self.wait_until(lambda: self._applied >= stored, timeout=30)
        self.live = True

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        position = msg.metadata.sequence.stream
        try:
            event = CREDENTIAL_DECODER.decode(msg.data)
        except Exception as exc:  # only the services write here; say so and go on
            log.error("credential event unreadable", position=position, error=repr(exc))
            event = None
        changed = apply(self.known, event, position) if event is not None else None
        if changed is not None and changed.nats_account is not None:
            if changed.active:
                self._by_slot[changed.nats_account] = changed.principal("nats")
            else:
                self._by_slot.pop(changed.nats_account, None)
        async with self._changed:
            self.position = position
            self._applied += 1
            self._changed.notify_all()
        if changed is not None and self.live:  # not the history replayed at start
            log.info(
                "credential revoked" if not changed.active else "credential issued",
                credential=changed.id,
                role=changed.role,
                by=changed.revoked_by or changed.issued_by,
            )
            for listener in list(self._listeners):
                listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    # -- the Authenticator ---------------------------------------------------------------
    async def bearer(self, token: str) -> Principal | None:
        parts = split_token(token)
        if parts is not None:
            credential = self.known.get(parts[0])
            if credential is None or not credential.active:
                return None
            if not hmac.compare_digest(sha256_hex(parts[1]), credential.token_sha256):
                return None
            return credential.principal("token")
        if self.jwt is not None and token.count(".") == 2:
            return await self.jwt(token)
        return None

    def by_credential(self, credential_id: str) -> Principal | None:
        credential = self.known.get(credential_id)
        return credential.principal("nats") if credential and credential.active else None

    def by_nats_account(self, account: str) -> Principal | None:
        return self._by_slot.get(account)  # asked once per message: kept ready, not searched

    def next_slot(self) -> str:
        """Slots are never reused: an inbox message of a revoked credential, still waiting in
        the stream, must never be taken for the next credential's."""
        used = {c.nats_account for c in self.known.values() if c.nats_account}
        index = len(used)
        if index >= self.slots:
            raise Rejected(
                "unavailable",
                f"all {self.slots} NATS account slots are used: raise MILESTONES_NATS_ACCOUNT_SLOTS"
                " and restart nats-server (README, Security)",
            )
        return slot_name(index)

    def credentials(self, include_revoked: bool = False) -> list[Credential]:
        return [c for c in self.known.values() if include_revoked or c.active]

    # -- issuing and revoking ------------------------------------------------------------
    async def issue(
        self,
        role: CredentialRole,
        *,
        name: str | None = None,
        sources: Iterable[str] = (),
        projects: Iterable[str] = (),
        by: Principal,
    ) -> Issued:
        sources, projects = sorted(set(sources)), sorted(set(projects))
        if role == "publisher" and not sources:
            raise Rejected("invalid", "a publisher credential needs at least one --source")
        if role != "publisher" and sources:
            raise Rejected("invalid", f"--source is for publisher credentials, not {role}")
        if role == "feed" and not projects:
            raise Rejected("invalid", "a feed credential needs at least one --project")
        name = name or (sources[0] if sources else role)
        credential_id = new_credential_id(role, name)
        secret = new_secret()
        nats_password = None if role == "feed" else bcrypt_hash(secret)

        def fact() -> CredentialIssued:  # the slot is chosen again after a conflict
            return CredentialIssued(
                credential_id=credential_id,
                role=role,
                name=name,
                sources=sources,
                projects=projects,
                token_sha256=sha256_hex(secret),
                nats_password_bcrypt=nats_password,
                nats_account=None if nats_password is None else self.next_slot(),
            )

        await self._append(fact, by)
        return Issued(self.known[credential_id], secret)

    async def revoke(self, credential_id: str, *, by: Principal, reason: str | None = None) -> None:
        credential = self.known.get(credential_id)
        if credential is None:
            raise Rejected("not_found", f"no credential {credential_id!r}: see `credentials list`")
        if not credential.active:
            return  # revoking twice changes nothing
        await self._append(
            lambda: CredentialRevoked(credential_id=credential_id, reason=reason), by
        )

    async def _append(
        self, make: Callable[[], CredentialIssued | CredentialRevoked], by: Principal
    ) -> None:
        """Append one credential event after every one this store knows (OCC over all of
        ``milestones.credentials.*``, so slots are handed out once); on a conflict catch up
        and decide again. Returns once this store has applied it."""
        for _ in range(5):
            expect = self.position
            try:
                position = await self._publish(make(), by, expect)
            except Rejected as exc:
                if exc.code != "conflict":
                    raise
                await self.wait_until(lambda: self.position > expect)  # noqa: B023
                continue
            await self.wait_until(lambda: self.position >= position)  # noqa: B023
            return
        raise Rejected("conflict", "credentials changed too often meanwhile: try again")

    async def _publish(
        self, fact: CredentialIssued | CredentialRevoked, by: Principal, expect: int
    ) -> int:
        now = dt.datetime.now(dt.UTC)
        event_id = str(uuid.uuid4())
        subject = credential_subject(fact.credential_id)
        stored = StoredCredentialEvent(
            id=event_id,
            source=SOURCE,
            type=type(fact).__name__,
            subject=subject,
            time=now,
            recordedtime=now,
            correlationid=event_id,
            causationid=event_id,
            principal=by.id,
            data=fact,
        )
        try:
            ack = await self.js.publish(
                subject,
                ENCODER.encode(stored),
                stream=EVENTS_STREAM,
                headers={
                    "Nats-Expected-Last-Subject-Sequence": str(expect),
                    "Nats-Expected-Last-Subject-Sequence-Subject": CREDENTIALS,
                },
            )
        except APIError as exc:
            if exc.err_code == 10071 or "wrong last sequence" in (exc.description or ""):
                raise Rejected(
                    "conflict", f"credential {fact.credential_id} changed meanwhile: try again"
                ) from exc
            raise
        return ack.seq

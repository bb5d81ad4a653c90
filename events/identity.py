"""Credentials as events: issued and revoked on ``milestones.credentials.<credential_id>`` in the
event log, so who may do what is itself audited. Secrets are never stored, only their hashes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from events.common import Event, Id

CredentialRole = Literal["publisher", "reader", "auditor", "admin", "feed"]
SourceName = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class CredentialIssued(Event, frozen=True, kw_only=True, tag_field="type", tag=True):
    """A credential: its role, what it may touch, and hashes of its one secret (the HTTP token
    is checked against ``token_sha256``; the NATS server checks the password's bcrypt hash)."""

    credential_id: Id
    role: CredentialRole
    name: Label
    sources: list[SourceName] = []  # publisher: the CloudEvent sources it may use
    projects: list[Id] = []  # empty: every project (feed credentials always name theirs)
    token_sha256: Sha256Hex
    nats_password_bcrypt: str | None = None  # feed credentials have no NATS identity
    nats_account: Id | None = None  # its NATS account slot (services.auth.natsconf)


class CredentialRevoked(Event, frozen=True, kw_only=True, tag_field="type", tag=True):
    credential_id: Id
    reason: Label | None = None


CredentialEvent = CredentialIssued | CredentialRevoked


class StoredCredentialEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The stored envelope of a credential event: a CloudEvent like every stored event."""

    id: str
    source: str
    type: str
    subject: str
    time: dt.datetime
    recordedtime: dt.datetime
    correlationid: str
    causationid: str
    data: CredentialEvent
    actor: str | None = None
    principal: str | None = None
    schemaversion: int = 1
    specversion: str = "1.0"
    datacontenttype: str = "application/json"


CREDENTIAL_DECODER = msgspec.json.Decoder(StoredCredentialEvent)

"""The services' own NATS identity and the system account's, generated once per deployment and
kept in files only their owner can read (mode 0600 in a 0700 directory)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from services.auth.credentials import bcrypt_hash, new_secret


class NatsLogin(msgspec.Struct, frozen=True):
    user: str
    password: str


class ServiceIdentity(msgspec.Struct, frozen=True):
    service: NatsLogin  # the services: the only users of the MILESTONES account
    system: NatsLogin  # reloads the accounts when credentials change

    @classmethod
    def generate(cls) -> ServiceIdentity:
        return cls(NatsLogin("milestones", new_secret()), NatsLogin("system", new_secret()))

    def hashes(self) -> tuple[str, str]:
        return bcrypt_hash(self.service.password), bcrypt_hash(self.system.password)


def write_private(path: Path, data: bytes) -> None:
    """Create or replace ``path`` readable by its owner only, in a directory only they enter."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_or_create(path: Path) -> ServiceIdentity:
    if path.exists():
        return msgspec.json.decode(path.read_bytes(), type=ServiceIdentity)
    identity = ServiceIdentity.generate()
    write_private(path, msgspec.json.format(msgspec.json.encode(identity)))
    return identity

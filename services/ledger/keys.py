"""The log's signing key: Ed25519, generated once per deployment, kept in a file only its owner
can read (the private key as PKCS#8 PEM, mode 0600, in a 0700 directory).

Beside it the public key is written twice, for auditors: ``<name>.pub.pem`` (SubjectPublicKeyInfo
PEM) and ``<name>.pub`` (the raw 32 bytes, base64). Its ``key_id`` (the first 8 bytes of
SHA-256 of the raw key, hex) names it in reports and at ``/.well-known/milestones/log-key``; the
4-byte key id inside a signed note is the one the C2SP signed-note spec defines
(``note_key_id``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = structlog.get_logger("milestones.ledger")

ED25519 = b"\x01"  # the signed-note signature type of Ed25519


@dataclass(frozen=True, slots=True)
class PublicKey:
    raw: bytes  # 32 bytes (RFC 8032 encoding)

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(self.raw)}")

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).digest()[:8].hex()

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode()

    @property
    def pem(self) -> str:
        return (
            Ed25519PublicKey.from_public_bytes(self.raw)
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def note_key_id(self, name: str) -> bytes:
        """SHA-256(key name || 0x0A || 0x01 || public key)[:4] (c2sp.org/signed-note)."""
        return hashlib.sha256(name.encode() + b"\n" + ED25519 + self.raw).digest()[:4]

    def vkey(self, name: str) -> str:
        """The verifier key string of Go's ``golang.org/x/mod/sumdb/note`` (and the tools built on
        it): ``<name>+<hex key id>+<base64(0x01 || key)>``."""
        key = base64.b64encode(ED25519 + self.raw).decode()
        return f"{name}+{self.note_key_id(name).hex()}+{key}"

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, text: str | bytes) -> PublicKey:
        """A public key as the well-known endpoint and the key files give it: PEM, the raw 32
        bytes in base64, or a note verifier key (``name+id+base64``)."""
        value = text.decode() if isinstance(text, bytes) else text
        value = value.strip()
        if value.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(value.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("the PEM holds a public key that is not Ed25519")
            return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        name, _, rest = value.partition("+")
        if len(value) > 44 and name and len(rest) > 9 and rest[8] == "+":  # a note verifier key
            raw = _b64(rest[9:])
            if raw[:1] != ED25519:
                raise ValueError("the verifier key is not an Ed25519 key")
            return cls(raw[1:])
        return cls(_b64(value))


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None


@dataclass(frozen=True, slots=True)
class SigningKey:
    private: Ed25519PrivateKey
    public: PublicKey

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.of(Ed25519PrivateKey.generate())

    @classmethod
    def of(cls, private: Ed25519PrivateKey) -> SigningKey:
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private, PublicKey(raw))


def key_path(data_dir: str | Path, configured: str | None = None) -> Path:
    """Where the deployment's key lives: ``signing_key_file`` when set, else in the data dir."""
    return Path(configured) if configured else Path(data_dir) / "keys" / "log-signing.pem"


def load_public(path: str | Path) -> PublicKey:
    """The public key only: from the private key file when this process may read it, else from
    the ``.pub.pem`` written beside it (a process that serves proofs needs no private key)."""
    path = Path(path)
    if path.exists():
        return _load(path).public
    pem_path, _ = public_paths(path)
    if not pem_path.exists():
        raise FileNotFoundError(f"no log signing key at {path} (nor {pem_path.name} beside it)")
    return PublicKey.parse(pem_path.read_text())


def public_paths(path: Path) -> tuple[Path, Path]:
    """Where the public key is written beside the private one: (PEM, raw base64)."""
    stem = path.with_suffix("") if path.suffix == ".pem" else path
    return stem.with_name(stem.name + ".pub.pem"), stem.with_name(stem.name + ".pub")


def load_or_create(path: str | Path) -> SigningKey:
    """The deployment's key from ``path``, created there on first use.

    Creation writes a complete file under a temporary name and links it into place, so a
    concurrent starter never reads half a key and two starters never make two keys: the one
    whose link fails reads the winner's."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = SigningKey.generate()
        pem = key.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".log-key-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
                log.info("log signing key created", path=str(path), key_id=key.public.key_id)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    key = _load(path)
    _write_public(path, key.public)
    return key


def _load(path: Path) -> SigningKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "log signing key is readable by others: chmod 600 it",
            path=str(path),
            mode=oct(mode),
        )
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a private key that is not Ed25519")
    return SigningKey.of(private)


def _write_public(path: Path, public: PublicKey) -> None:
    pem_path, raw_path = public_paths(path)
    for target, text in ((pem_path, public.pem), (raw_path, public.b64 + "\n")):
        if not target.exists() or target.read_text() != text:
            target.write_text(text)

"""Webhook secrets at rest: sealed with AES-256-GCM before they reach the event log.

**The keyring.** Keys come from the setting ``MILESTONES_SECRET_KEY`` (or a key file, mode 0600,
holding the same text): ``"kid:base64url(32 bytes)[,kid:...]"``. The first key seals; every key
opens. So a key rotates by putting the new one first and keeping the old ones after it for as
long as sealed values made with them are in use (the log is append-only: they are never
re-sealed, so keep an old key as long as its subscriptions live).

**The sealed form** is one compact string, ``"sealed.v1.<kid>.<nonce>.<ciphertext>"`` (nonce and
ciphertext base64url without padding; the ciphertext ends with GCM's 16-byte tag). A string,
not a Struct, because it travels where the clear secret travelled (the event's ``secret``
field, the status read model's ``secret`` column, the outbox): every one of those keeps working
unchanged, and none of them can hold the clear value by mistake any more. The key id is in the
value, so the notifier knows which key opens it. The prefix tells a sealed value from a clear
one written before secrets were sealed (``is_sealed``).

**The associated data** binds a sealed value to its subscription (``subscription_aad``: project,
stakeholder, url): copied into another subscription's event it does not open, so whoever can
read the log cannot redirect a secret to a URL of their choosing.

Nothing here logs or puts a secret or a key in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.errors import StartupError

SEALED_PREFIX = "sealed.v1."
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
KEY_BYTES = 32
NONCE_BYTES = 12  # GCM's standard nonce: random per seal (2^32 seals per key stay far from risk)


class SecretError(ValueError):
    """A sealed value cannot be opened, or a keyring cannot be read. The message says why and
    never contains key material or the secret."""


class UnknownKey(SecretError):
    pass


class Tampered(SecretError):
    pass


class KeyringError(SecretError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    # strict: the lenient decoder skips characters outside the alphabet, hiding a typo
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def subscription_aad(project_id: str, stakeholder: str, url: str) -> bytes:
    """What a webhook secret is bound to: one stakeholder's url in one project. (The scope, a
    milestone or the whole project, is left out: the outbox does not keep it, and moving a
    secret between two scopes of the same stakeholder and url gains nothing.)"""
    return msgspec.json.encode(["milestones.webhook-secret.v1", project_id, stakeholder, url])


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


@dataclass(frozen=True, slots=True)
class Keyring:
    keys: tuple[tuple[str, bytes], ...]  # (kid, key); the first seals

    def __repr__(self) -> str:  # never the key bytes, in a log line or a traceback
        return f"Keyring(kids={self.kids!r})"

    @classmethod
    def from_setting(cls, text: str) -> Keyring:
        """Parse ``"kid:base64url(32 bytes)[,kid:...]"`` (whitespace around entries ignored)."""
        keys: list[tuple[str, bytes]] = []
        for n, entry in enumerate((e.strip() for e in text.split(",")), 1):
            if not entry:
                continue
            kid, sep, encoded = entry.partition(":")
            kid = kid.strip()
            if not sep or not KID_PATTERN.match(kid):
                raise KeyringError(
                    f"secret key entry #{n} is not 'kid:base64url': the key id must be 1-32 of "
                    "A-Z a-z 0-9 _ - (make one with `milestones dev`, or Keyring.generate())"
                )
            try:
                key = _unb64(encoded.strip())
            except (binascii.Error, ValueError):
                raise KeyringError(f"secret key {kid!r} is not base64url") from None
            if len(key) != KEY_BYTES:
                raise KeyringError(
                    f"secret key {kid!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
                )
            if any(k == kid for k, _ in keys):
                raise KeyringError(f"secret key id {kid!r} appears twice")
            keys.append((kid, key))
        if not keys:
            raise KeyringError(
                "the secret key setting is empty: expected 'kid:base64url(32 bytes)'"
            )
        return cls(tuple(keys))

    @staticmethod
    def generate(kid: str | None = None) -> str:
        """A new random key, as setting text (``kid:base64url``). The kid defaults to a random
        one, so two generated keys never share an id (rotation keeps both)."""
        kid = kid or f"k{secrets.token_hex(4)}"
        if not KID_PATTERN.match(kid):
            raise KeyringError(f"key id {kid!r} must be 1-32 of A-Z a-z 0-9 _ -")
        return f"{kid}:{_b64(AESGCM.generate_key(bit_length=256))}"

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys)

    def seal(self, secret: str, aad: bytes) -> str:
        kid, key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, secret.encode(), aad)
        return f"{SEALED_PREFIX}{kid}.{_b64(nonce)}.{_b64(ciphertext)}"

    def open(self, sealed: str, aad: bytes) -> str:
        """The clear secret; ``UnknownKey`` when its key is not in the keyring, ``Tampered``
        when the value was altered or belongs to another subscription."""
        if not is_sealed(sealed):
            raise Tampered("the value is not a sealed secret (no 'sealed.v1.' prefix)")
        parts = sealed[len(SEALED_PREFIX) :].split(".")
        if len(parts) != 3:
            raise Tampered("the sealed secret is malformed: expected sealed.v1.<kid>.<nonce>.<ct>")
        kid, nonce_text, ct_text = parts
        key = dict(self.keys).get(kid)
        if key is None:
            known = ", ".join(self.kids)
            raise UnknownKey(
                f"the secret was sealed with key {kid!r}, which is not in the keyring "
                f"(keys: {known}): add it back to MILESTONES_SECRET_KEY after the current key"
            )
        try:
            nonce, ciphertext = _unb64(nonce_text), _unb64(ct_text)
            if len(nonce) != NONCE_BYTES:
                raise ValueError("nonce length")
            return AESGCM(key).decrypt(nonce, ciphertext, aad).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise Tampered(
                f"the sealed secret (key {kid!r}) does not open: it was altered, or it belongs "
                "to another subscription"
            ) from None


# -- key files -------------------------------------------------------------------------------------
def write_key_file(path: str | Path, text: str | None = None) -> str:
    """Write a keyring file readable by its owner only (0600 from the start: the key never sits
    in a file others can read, whatever the umask). ``text`` defaults to a new key. Refuses to
    overwrite an existing file (that would lose the key that opens the stored secrets)."""
    text = Keyring.generate() if text is None else text
    Keyring.from_setting(text)  # never write what cannot be read back
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyringError(
            f"{path} exists: it holds the keys that open stored secrets; not overwritten"
        ) from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)
    return text


def load_key_file(path: str | Path) -> Keyring:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise KeyringError(f"cannot read the secret key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(
            f"the secret key file {path} is readable by others (mode {stat.S_IMODE(mode):o}): "
            f"chmod 600 {path}"
        )
    try:
        return Keyring.from_setting(text)
    except KeyringError as exc:
        raise KeyringError(f"{path}: {exc}") from None


def ensure_key_file(path: str | Path) -> Keyring:
    """The keyring in ``path``, made on first use (``milestones dev``)."""
    if not Path(path).exists():
        write_key_file(path)
    return load_key_file(path)


def keyring_from_settings(secret_key: str | None, secret_key_file: str | None) -> Keyring | None:
    """The services' keyring: from ``MILESTONES_SECRET_KEY`` or ``MILESTONES_SECRET_KEY_FILE``
    (not both: which one rotates would be a guess). None when neither is set: subscriptions
    with a secret are then refused, saying so. A bad setting is a ``StartupError`` (one line)."""
    if secret_key and secret_key_file:
        raise StartupError(
            "both MILESTONES_SECRET_KEY and MILESTONES_SECRET_KEY_FILE are set: keep one"
        )
    try:
        if secret_key:
            return Keyring.from_setting(secret_key)
        if secret_key_file:
            return load_key_file(secret_key_file)
    except KeyringError as exc:
        name = "MILESTONES_SECRET_KEY" if secret_key else "MILESTONES_SECRET_KEY_FILE"
        raise StartupError(f"{name}: {exc}") from None
    return None

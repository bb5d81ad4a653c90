"""Signed checkpoints in the C2SP formats (pure: no I/O, no clock).

A checkpoint is a signed note (c2sp.org/signed-note) whose text is a tlog-checkpoint
(c2sp.org/tlog-checkpoint)::

    milestones/MILESTONES
    1042
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
    time 2026-11-24T10:00:02Z

    — milestones/MILESTONES Az3grlgtzPICa5OS8npV...

The origin line, the tree size and the base64 RFC 6962 root are the standard three lines; the
time is one extension line so that the signature covers it (the issue asks for signed time; the
spec allows extension lines and tools that read checkpoints pass them through). The key name is
the origin, the signature is ``base64(key id || Ed25519 signature over the text)`` with the
spec's 4-byte key id, so Go's ``sumdb/note`` and the transparency-dev tooling can read it given
the verifier key (``PublicKey.vkey``).

What is stored per checkpoint (``CheckpointRecord``, one message in MILESTONES_CHECKPOINTS) is
the note plus two unsigned helpers, each checked against the signed root before it is trusted:

- ``leaves``: the leaf hashes of the positions this checkpoint adds (since the previous one).
  A root says only *that* something in 1..n changed; these say *which* position, once the
  verifier has recomputed the previous checkpoint's frontier and checked that it extended by
  these hashes gives this root (``verify``). They also let the service serve proofs without
  re-reading the log. 32 bytes per event, capped per checkpoint (``MAX_LEAVES``) so a message
  stays far below NATS' 1 MB payload limit.
- ``frontier``: the tree's O(log n) compact range, so the writer restarts without re-hashing
  the log.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass

import msgspec

from events.subjects import EVENTS_STREAM
from services.ledger.keys import PublicKey, SigningKey
from services.ledger.merkle import HASH_SIZE, Frontier

ORIGIN = f"milestones/{EVENTS_STREAM}"  # the log's name: first line of a checkpoint, the key name
MAX_LEAVES = 8192  # leaf hashes per checkpoint: 256 KiB, ~350 KiB as JSON base64
_DASH = "\u2014 "  # em dash, space: a signature line


class NoteError(ValueError):
    """A note that does not parse, or whose signature does not verify with the key."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: str  # RFC 3339, UTC, seconds

    def text(self) -> str:
        if not self.origin or any(c.isspace() for c in self.origin) or "+" in self.origin:
            raise NoteError(f"origin {self.origin!r}: non-empty, no spaces, no '+'")
        root = base64.b64encode(self.root).decode()
        return f"{self.origin}\n{self.size}\n{root}\ntime {self.time}\n"

    def to_json(self) -> dict[str, object]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "time": self.time,
        }


class CheckpointRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One message of MILESTONES_CHECKPOINTS (JSON; ``bytes`` fields are base64)."""

    note: str
    leaves: bytes  # leaf hashes of positions previous size + 1 .. size, concatenated
    frontier: list[bytes]  # Frontier.stack at size

    @property
    def added(self) -> int:
        return len(self.leaves) // HASH_SIZE

    def leaf_hashes(self) -> list[bytes]:
        b = self.leaves
        return [b[i : i + HASH_SIZE] for i in range(0, len(b), HASH_SIZE)]


RECORD_ENCODER = msgspec.json.Encoder()
RECORD_DECODER = msgspec.json.Decoder(CheckpointRecord)


def utc_time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sign(checkpoint: Checkpoint, key: SigningKey) -> str:
    """The signed note of ``checkpoint``."""
    text = checkpoint.text()
    signature = key.sign(text.encode())
    blob = base64.b64encode(key.public.note_key_id(checkpoint.origin) + signature).decode()
    return f"{text}\n{_DASH}{checkpoint.origin} {blob}\n"


def record(checkpoint: Checkpoint, key: SigningKey, added: list[bytes], tree: Frontier) -> bytes:
    if tree.size != checkpoint.size:
        raise ValueError(f"frontier of size {tree.size} for a checkpoint of {checkpoint.size}")
    rec = CheckpointRecord(
        note=sign(checkpoint, key), leaves=b"".join(added), frontier=list(tree.stack)
    )
    return RECORD_ENCODER.encode(rec)


def open_note(note: str, key: PublicKey, origin: str | None = None) -> Checkpoint:
    """The checkpoint a note carries, once a signature by ``key`` under the note's origin (or
    ``origin``, when the caller pins it) verifies. Raises ``NoteError`` otherwise."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("not a signed note: no blank line before the signatures")
    text, signatures = note[: cut + 1], note[cut + 2 :]
    checkpoint = parse_checkpoint(text)
    name = origin or checkpoint.origin
    if checkpoint.origin != name:
        raise NoteError(f"checkpoint of log {checkpoint.origin!r}, expected {name!r}")
    key_id = key.note_key_id(name)
    for line in signatures.splitlines():
        if not line.startswith(_DASH):
            raise NoteError(f"malformed signature line {line[:40]!r}")
        signer, _, blob = line[len(_DASH) :].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise NoteError(f"signature of {signer!r} is not base64") from None
        if signer != name or raw[:4] != key_id:
            continue  # another key's signature (a witness, a rotated key): ignored, as specified
        if key.verify(raw[4:], text.encode()):
            return checkpoint
        raise NoteError(f"the signature of {name!r} (key {key.key_id}) does not verify")
    raise NoteError(f"no signature by {name!r} with key {key.key_id}")


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise NoteError("a checkpoint is at least three non-empty lines, each ending in newline")
    origin, size_line, root_line, *extensions = lines[:-1]
    if not size_line.isdigit() or (size_line != "0" and size_line.startswith("0")):
        raise NoteError(f"tree size {size_line!r} is not a decimal number")
    try:
        root = base64.b64decode(root_line, validate=True)
    except binascii.Error:
        raise NoteError("root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise NoteError(f"root hash is {len(root)} bytes, not {HASH_SIZE}")
    time = next((e[5:] for e in extensions if e.startswith("time ")), "")
    return Checkpoint(origin, int(size_line), root, time)

"""The audit export: everything an auditor needs to verify the log offline, as JSON Lines.

    {"format": "milestones-audit-export/1", "origin": ..., "public_key": ..., "checkpoints": K, ...}
    {"seq": 1, "checkpoint": {"note": "...", "leaves": "<base64>", "frontier": [...]}}   K lines
    {"position": 1, "subject": "milestones.events.p1", "data_b64": "<base64>"}          one per
                                                                                         message
Checkpoints come first so that a verifier can stream the events; the events are every stored
message of MILESTONES in stream order, in their exact stored bytes (base64), up to the last
position when the export started (so every checkpoint in the file covers events in the file).
The key in the header is a convenience: an auditor should compare its id with the one published
at ``/.well-known/milestones/log-key`` (or pass that key to ``audit verify --key``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec
from nats.aio.client import Client as NATS

from services.ledger import store
from services.ledger.keys import PublicKey
from services.ledger.note import CheckpointRecord

FORMAT = "milestones-audit-export/1"


class ExportHeader(msgspec.Struct, kw_only=True):
    format: str = FORMAT
    origin: str
    key_id: str
    public_key: str  # raw Ed25519 key, base64
    public_key_pem: str
    vkey: str  # the signed-note verifier key
    exported_at: str
    events: int
    checkpoints: int


class ExportCheckpoint(msgspec.Struct, kw_only=True):
    seq: int
    checkpoint: CheckpointRecord


class ExportEvent(msgspec.Struct, kw_only=True):
    position: int
    subject: str
    data: bytes = msgspec.field(name="data_b64")


_ENCODER = msgspec.json.Encoder()
_HEADER = msgspec.json.Decoder(ExportHeader)
_CHECKPOINT = msgspec.json.Decoder(ExportCheckpoint)
_EVENT = msgspec.json.Decoder(ExportEvent)


class ExportError(ValueError):
    """The file is not an audit export (its header or a checkpoint line does not parse)."""


def header(key: PublicKey, origin: str, exported_at: str, events: int, checkpoints: int) -> bytes:
    head = ExportHeader(
        origin=origin,
        key_id=key.key_id,
        public_key=key.b64,
        public_key_pem=key.pem,
        vkey=key.vkey(origin),
        exported_at=exported_at,
        events=events,
        checkpoints=checkpoints,
    )
    return _ENCODER.encode(head) + b"\n"


async def export_lines(
    nc: NATS, key: PublicKey, origin: str, exported_at: str
) -> AsyncGenerator[bytes]:
    """The export, a chunk of lines at a time (the services' identity reads the streams)."""
    checkpoints = await store.read_checkpoints(nc)
    end = await store.last_sequence(nc)
    yield header(key, origin, exported_at, end, len(checkpoints))
    for c in checkpoints:
        yield _ENCODER.encode(ExportCheckpoint(seq=c.seq, checkpoint=c.record)) + b"\n"
    async for batch in store.read_log(nc, end):
        yield b"".join(
            _ENCODER.encode(ExportEvent(position=m.seq, subject=m.subject, data=m.data)) + b"\n"
            for m in batch
        )


@dataclass
class Export:
    header: ExportHeader
    checkpoints: list[CheckpointRecord]
    _file: IO[bytes]

    def leaves(self) -> Iterator[bytes]:
        """The stored bytes of each event line, in file order (the file's order is the claim
        being verified; the ``position`` fields are not trusted). A line that does not parse
        stands for bytes that cannot be the stored ones, so the verifier names its position."""
        try:
            for line in self._file:
                if not line.strip():
                    continue
                try:
                    yield _EVENT.decode(line).data
                except msgspec.DecodeError:
                    yield b"\xffunreadable export line: " + line
        finally:
            self._file.close()


def open_export(path: str | Path) -> Export:
    f = Path(path).open("rb")
    try:
        try:
            head = _HEADER.decode(f.readline())
        except msgspec.DecodeError as exc:
            raise ExportError(f"{path}: line 1 is not an audit export header ({exc})") from None
        if head.format != FORMAT:
            raise ExportError(f"{path}: format {head.format!r}, this version reads {FORMAT!r}")
        checkpoints = []
        for i in range(head.checkpoints):
            try:
                checkpoints.append(_CHECKPOINT.decode(f.readline()).checkpoint)
            except msgspec.DecodeError as exc:
                raise ExportError(f"{path}: line {i + 2} is not a checkpoint ({exc})") from None
    except BaseException:
        f.close()
        raise
    return Export(head, checkpoints, f)

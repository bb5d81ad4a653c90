"""What the audit endpoints serve: the signed checkpoints, inclusion and consistency proofs
against them, live verification and the export.

Proofs are computed from the leaf hashes the checkpoint records carry, not by re-reading the
log: each record is checked against its signed root as it is loaded, so a proof served here
verifies against a signed checkpoint with nothing but the public key (a client that distrusts
the server loses nothing: a wrong proof simply does not verify).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from bisect import bisect_left
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS

from events.errors import Rejected
from services.ledger import store
from services.ledger.export import export_lines
from services.ledger.keys import PublicKey
from services.ledger.merkle import LeafHashes, consistency_proof, inclusion_proof
from services.ledger.note import Checkpoint, NoteError, open_note, utc_time
from services.ledger.verify import Report, Verifier

log = structlog.get_logger("milestones.ledger")


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    checkpoint: Checkpoint
    note: str

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, **self.checkpoint.to_json(), "note": self.note}


class LedgerView:
    def __init__(self, nc: NATS, key: PublicKey, origin: str) -> None:
        self.nc = nc
        self.key = key
        self.origin = origin
        self.entries: list[Entry] = []
        self.problem: str | None = None  # a checkpoint that did not check out: nothing after it
        self._sizes: list[int] = []
        self._hashes = LeafHashes()
        self._seq = 0
        self._lock = asyncio.Lock()
        self._verifying = asyncio.Lock()

    def public_key(self) -> dict[str, str]:
        return {
            "origin": self.origin,
            "algorithm": "Ed25519",
            "key_id": self.key.key_id,
            "public_key": self.key.b64,
            "public_key_pem": self.key.pem,
            "vkey": self.key.vkey(self.origin),
            "note_key_id": self.key.note_key_id(self.origin).hex(),
        }

    async def refresh(self) -> None:
        """Load the checkpoints written since the last call."""
        async with self._lock:
            if self.problem is not None:
                return
            for stored in await store.read_checkpoints(self.nc, self._seq):
                rec = stored.record
                try:
                    cp = open_note(rec.note, self.key, self.origin)
                except NoteError as exc:
                    self._stop(stored.seq, str(exc))
                    return
                if cp.size != len(self._hashes) + rec.added:
                    self._stop(stored.seq, f"size {cp.size} does not follow {len(self._hashes)}")
                    return
                self._hashes.add(rec.leaves)
                if self._hashes.root(cp.size) != cp.root:
                    self._stop(stored.seq, "its leaf hashes do not give its signed root")
                    return
                self.entries.append(Entry(stored.seq, cp, rec.note))
                self._sizes.append(cp.size)
                self._seq = stored.seq

    def _stop(self, seq: int, why: str) -> None:
        self.problem = f"checkpoint message {seq}: {why}; run `milestones audit verify`"
        log.error("checkpoint does not check out: proofs stop before it", seq=seq, reason=why)

    def latest(self) -> Entry | None:
        return self.entries[-1] if self.entries else None

    def at_size(self, size: int) -> Entry:
        i = bisect_left(self._sizes, size)
        if i == len(self._sizes) or self._sizes[i] != size:
            raise Rejected(
                "not_found", f"no signed checkpoint has size {size}: GET /audit/checkpoints"
            )
        return self.entries[i]

    def _signed(self, size: int) -> bool:
        i = bisect_left(self._sizes, size)
        return i < len(self._sizes) and self._sizes[i] == size

    def _target(self, size: int | None) -> Entry:
        if size is not None:
            return self.at_size(size)
        latest = self.latest()
        if latest is None:
            raise Rejected("not_found", "no checkpoint is signed yet: try again in a few seconds")
        return latest

    # -- proofs ---------------------------------------------------------------------------------
    async def inclusion(self, position: int, size: int | None = None) -> dict[str, object]:
        await self.refresh()
        entry = self._target(size)
        n = entry.checkpoint.size
        if position > n:
            latest = self.latest()
            if size is None or (latest is not None and position > latest.checkpoint.size):
                covered = latest.checkpoint.size if latest else 0
                raise Rejected(
                    "not_found",
                    f"position {position} is not covered by a signed checkpoint yet (the latest "
                    f"covers 1..{covered}): try again in a few seconds",
                )
            raise Rejected("not_found", f"position {position} is after checkpoint size {n}")
        message = await store.message_at(self.nc, position)
        leaf = self._hashes.leaf(position - 1)
        return {
            "position": position,
            "leaf_index": position - 1,
            "tree_size": n,
            "leaf_hash": b64(leaf),
            "proof": [b64(h) for h in inclusion_proof(position - 1, n, self._hashes.mth)],
            "checkpoint": entry.to_json(),
            "event": None
            if message is None
            else {"subject": message.subject, "data_b64": b64(message.data)},
        }

    async def consistency(self, old: int, new: int | None = None) -> dict[str, object]:
        await self.refresh()
        entry = self._target(new)
        n = entry.checkpoint.size
        if old > n:
            raise Rejected("invalid", f"from ({old}) must not be after to ({n})")
        return {
            "from": old,
            "to": n,
            "proof": [b64(h) for h in consistency_proof(old, n, self._hashes.mth)],
            "from_checkpoint": self.at_size(old).to_json() if self._signed(old) else None,
            "to_checkpoint": entry.to_json(),
        }

    async def checkpoints(self, after: int = 0, limit: int = 100) -> dict[str, object]:
        await self.refresh()
        latest = self.latest()
        start = bisect_left(self._sizes, after + 1)
        return {
            "latest": latest.to_json() if latest else None,
            "count": len(self.entries),
            "checkpoints": [e.to_json() for e in self.entries[start : start + limit]],
            "problem": self.problem,
        }

    # -- the whole log --------------------------------------------------------------------------
    async def verify_live(self) -> Report:
        """Recompute the tree from the stream (ordered consumer) and check every checkpoint."""
        async with self._verifying:  # one at a time: each reads the whole log
            records = [c.record for c in await store.read_checkpoints(self.nc)]
            verifier = Verifier(records, self.key, self.origin)
            async with aclosing(store.read_log(self.nc)) as batches:
                async for batch in batches:
                    verifier.add_many(m.data for m in batch)
                    if verifier.failed:
                        break
            return verifier.finish()

    def export(self) -> AsyncGenerator[bytes]:
        return export_lines(self.nc, self.key, self.origin, utc_time(dt.datetime.now(dt.UTC)))

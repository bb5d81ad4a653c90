"""Verification of the log against its signed checkpoints (pure: leaves in, a report out).

What is checked, and why it is enough:

1. Every checkpoint's note is signed by the log's key under its origin (``open_note``), and the
   checkpoints chain: sizes grow, and each record's leaf hashes cover exactly the positions
   since the previous checkpoint.
2. The tree is recomputed from the leaves (the exact stored bytes, position p = leaf p - 1) and,
   at each checkpoint's size, its root must equal the signed root.

Consistency between consecutive checkpoints follows from 2: both roots were recomputed from one
sequence of leaves, so the earlier tree *is* a prefix of the later one, which is what a
consistency proof establishes for a verifier who holds only the two roots (that verifier uses
``GET /audit/consistency``; the writer checks a proof before every signature).

Naming the first bad position. A root only says that *something* in 1..n differs. So each
checkpoint record also carries the leaf hashes of the positions it adds. They are not signed
themselves but are authenticated through the signed root: the checkpoints are checked in order,
so when checkpoint k is the first whose root does not match, the log's tree up to checkpoint
k - 1 is the one that was signed, and if that tree extended by k's recorded hashes gives k's
signed root, those hashes are what k signed. The first position after k - 1 whose leaf hash
differs from them is then the first position that differs from what the checkpoints commit to:
a changed byte names its position, a removed event the position it vacated, two swapped events
the earlier of the two. Should the recorded hashes not reproduce the signed root (the checkpoint
record itself was altered), the report names the range k - 1 + 1 .. k and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import sha256
from itertools import islice

import msgspec

from services.ledger.keys import PublicKey
from services.ledger.merkle import Frontier
from services.ledger.note import Checkpoint, CheckpointRecord, NoteError, open_note

_CHUNK = 65536  # leaves hashed per step: bounded memory whatever a checkpoint claims


class Report(msgspec.Struct, kw_only=True):
    ok: bool
    message: str  # one line, the first problem when there is one
    events: int  # leaves read (up to the first problem)
    checkpoints: int  # checkpoints verified against the log
    covered: int  # the size of the last verified checkpoint
    first_bad_position: int | None = None
    bad_checkpoint: int | None = None  # 1-based, in the checkpoint stream's order
    key_id: str = ""
    origin: str = ""
    latest: dict[str, object] | None = None  # the last verified checkpoint


def _label(index: int, cp: Checkpoint) -> str:
    signed = f", signed {cp.time}" if cp.time else ""
    return f"checkpoint #{index} (size {cp.size}{signed})"


class Verifier:
    """Feed the leaves in order (``add_many``, possibly in several calls), then ``finish``."""

    def __init__(
        self, checkpoints: Sequence[CheckpointRecord], key: PublicKey, origin: str | None = None
    ) -> None:
        self.key = key
        self.origin = origin or ""
        self._cps: list[tuple[Checkpoint, CheckpointRecord]] = []
        self._deferred: tuple[int, str] | None = None  # a checkpoint's problem, if the log is fine
        self._failure: Report | None = None
        self._frontier = Frontier()
        self._before = Frontier()  # the tree at the last verified checkpoint
        self._interval: list[bytes] = []  # leaf hashes since then
        self._next = 0  # index into _cps of the next checkpoint to reach
        self._tail = 0  # leaves after the last checkpoint (not hashed: nothing to compare)
        self._parse(checkpoints)

    # -- the checkpoints alone ---------------------------------------------------------------------
    def _parse(self, records: Sequence[CheckpointRecord]) -> None:
        previous = 0
        for i, rec in enumerate(records, 1):
            try:
                cp = open_note(rec.note, self.key, self.origin or None)
            except NoteError as exc:
                self._defer(i, f"checkpoint #{i}: {exc} (forged or altered)")
                return
            self.origin = self.origin or cp.origin
            if cp.size <= previous or rec.added != cp.size - previous:
                self._defer(
                    i,
                    f"{_label(i, cp)} does not continue the previous one (size {previous}) with "
                    f"{rec.added} leaf hashes",
                )
                return
            self._cps.append((cp, rec))
            previous = cp.size

    def _defer(self, index: int, message: str) -> None:
        self._deferred = (index, message)

    # -- the leaves --------------------------------------------------------------------------------
    def add_many(self, leaves: Iterable[bytes]) -> None:
        it = iter(leaves)
        while self._failure is None and self._next < len(self._cps):
            target = self._cps[self._next][0].size
            need = min(target - self._frontier.size, _CHUNK)
            hashes = [sha256(b"\x00" + d).digest() for d in islice(it, need)]
            self._frontier.extend(hashes)
            self._interval += hashes
            if len(hashes) < need:
                return  # the leaves ran out (for now)
            if self._frontier.size == target:
                self._reached()
        if self._failure is None:
            self._tail += sum(1 for _ in it)

    def _reached(self) -> None:
        cp, rec = self._cps[self._next]
        root, got = self._frontier.root(), b"".join(self._interval)
        if root == cp.root and got == rec.leaves:
            self._before = self._frontier.copy()
            self._interval = []
            self._next += 1
            return
        if root == cp.root:  # the log is what was signed; the record beside the note is not
            self._failure = self._report(
                False,
                f"{_label(self._next + 1, cp)}: its recorded leaf hashes were altered "
                "(the log itself matches the signed root)",
                bad_checkpoint=self._next + 1,
            )
            return
        self._localise(cp, rec)

    def _localise(self, cp: Checkpoint, rec: CheckpointRecord) -> None:
        """The first position after the last good checkpoint that differs from checkpoint
        ``cp`` (see the module docstring)."""
        start = self._before.size  # positions start+1 .. cp.size
        recorded = rec.leaf_hashes()
        signed = self._before.copy()
        signed.extend(recorded)
        authentic = signed.size == cp.size and signed.root() == cp.root
        differs = next(
            (i for i, (a, b) in enumerate(zip(self._interval, recorded, strict=False)) if a != b),
            None,
        )
        label = _label(self._next + 1, cp)
        if differs is not None:
            position = start + differs + 1
            what = f"position {position} differs"
        elif len(self._interval) < len(recorded):  # the log ends early
            position = start + len(self._interval) + 1
            what = f"position {position} is missing (the log ends at {position - 1})"
        else:
            position, what = start + 1, ""
        if authentic and what:
            message = f"{what} from what {label} commits to"
        else:
            message = (
                f"the log differs from {label} somewhere in positions {start + 1}..{cp.size}; "
                "its recorded leaf hashes were altered too, so the position is not certain"
            )
        self._failure = self._report(
            False, message, first_bad_position=position, bad_checkpoint=self._next + 1
        )

    @property
    def failed(self) -> bool:
        """A problem in the log was found: the rest of the leaves need not be read."""
        return self._failure is not None

    # -- the result --------------------------------------------------------------------------------
    def finish(self) -> Report:
        if self._failure is None and self._next < len(self._cps):
            cp, rec = self._cps[self._next]  # the log ended before this checkpoint's size
            self._localise(cp, rec)
        if self._failure is not None:
            return self._failure
        if self._deferred is not None:
            index, message = self._deferred
            return self._report(False, message, bad_checkpoint=index)
        if not self._cps:
            n = self._frontier.size + self._tail
            return self._report(True, f"{n} events, no signed checkpoint yet: nothing to verify")
        cp = self._cps[-1][0]
        tail = f"; {self._tail} later events not yet checkpointed" if self._tail else ""
        return self._report(
            True,
            f"verified {self._frontier.size + self._tail} events against {len(self._cps)} signed "
            f"checkpoints; the latest covers positions 1..{cp.size} (signed {cp.time}){tail}",
        )

    def _report(self, ok: bool, message: str, **problem: int | None) -> Report:
        latest = self._cps[self._next - 1][0] if self._next else None
        return Report(
            ok=ok,
            message=message,
            events=self._frontier.size + self._tail,
            checkpoints=self._next,
            covered=latest.size if latest else 0,
            key_id=self.key.key_id,
            origin=self.origin,
            latest=latest.to_json() if latest else None,
            **problem,
        )


def verify(
    leaves: Iterable[bytes],
    checkpoints: Sequence[CheckpointRecord],
    public_key: PublicKey,
    origin: str | None = None,
) -> Report:
    """Verify ``leaves`` (every stored message's bytes, in stream order) against the signed
    ``checkpoints`` (in the order they were written) with the log's public key."""
    verifier = Verifier(checkpoints, public_key, origin)
    verifier.add_many(leaves)
    return verifier.finish()

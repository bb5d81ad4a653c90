"""Process-wide settings of the Python runtime, applied by every entry point before it works:
the CLI (``milestones serve|dev|rebuild|bench …``) and the benchmark's own processes (the
rebuild, the echo ceilings), so that a figure and its ceiling run alike. ``tune`` first thing,
``started`` once the process has imported and wired what it runs on.

The cyclic garbage collector. CPython runs a young-generation pass every 700 container objects
allocated net, and a service allocates that many every few messages (a message, its headers,
its decoded event, its rows); what survives a pass is promoted, and every tenth older pass
scans everything older, up to the whole heap. Measured on 2026-12-07 (py-spy and A/B, the
benchmark's 414,000-event log): the rebuild of status, history and audit spent 20 % of its CPU
in the collector, 26.3 µs per event with it tuned as below against 32.8-34.0 µs without
(and the same with the collector off: nothing it does is needed there, nor memory saved by
it: peak RSS 127 MB either way). Memory is still freed when the last reference goes
(reference counting); the collector only finds cycles, and those are rare here, so letting
50,000 objects accumulate between passes costs next to nothing.

The objects a process makes while starting (modules, classes, the wiring) live as long as it
does, and a pass over the oldest generation scans them all every time: 139,000 objects in a
service, 62-82 ms per full pass measured here, a pause for every message and request in
flight then (the benchmark's p99s: freshness 112-189 ms, the intake's 200 ms). ``started``
moves them out of the collector's sight (``gc.freeze``), once.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# objects allocated net between young passes (CPython's default 700); the older generations'
# counts stay at CPython's defaults
GC_YOUNG_THRESHOLD = 50_000

# the same while a read model is rebuilt (``replaying``). A rebuild keeps more alive between
# passes than a service (up to 10,000 status rows held, a batch read ahead, each lane's batch),
# so a young pass there has much to scan: 40-43 passes of ~25 ms and three older ones of ~90 ms
# in a rebuild of all three (1.3 s of its 11 s of CPU, 2026-12-07, timed with ``gc.callbacks``).
# With this threshold none ran in a rebuild of the benchmark's log, and memory stayed as it was
# (peak RSS 200-205 MB either way): what the passes would find is next to nothing. Not for the
# services: a pass scans what accumulated since the last, and a long pause there is a
# request's p99.
REPLAY_GC_YOUNG_THRESHOLD = 500_000


def tune() -> None:
    """Set this process's collector thresholds (idempotent)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


@contextlib.contextmanager
def replaying() -> Iterator[None]:
    """The collector's young threshold for a rebuild (``REPLAY_GC_YOUNG_THRESHOLD``) while the
    block runs, this process's own again after it (the rebuild command, the benchmark's
    rebuilds, and the ceiling they are measured against, so that the two run alike)."""
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(REPLAY_GC_YOUNG_THRESHOLD, older, oldest)
    try:
        yield
    finally:
        gc.set_threshold(young, older, oldest)


def started() -> None:
    """What the process holds now, it holds for good: collect once, then keep those objects out
    of every later pass (what is made from here on is collected as before)."""
    gc.collect()
    gc.freeze()

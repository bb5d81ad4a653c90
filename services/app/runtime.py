"""Process-wide settings of the Python runtime, applied by every entry point before it works:
the CLI (``milestones serve|dev|rebuild|bench …``) and the benchmark's own processes (the
rebuild, the echo ceilings), so that a figure and its ceiling run alike.

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
"""

from __future__ import annotations

import gc

# objects allocated net between young passes (CPython's default 700); the older generations'
# counts stay at CPython's defaults
GC_YOUNG_THRESHOLD = 50_000


def tune() -> None:
    """Set this process's collector thresholds (idempotent)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)

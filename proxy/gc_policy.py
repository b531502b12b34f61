"""Garbage-collector settings for a process that serves many short requests on one event loop.

A full (oldest-generation) collection stops the loop for as long as it takes to scan every tracked
object; the Functions runtime, FastAPI, aiohttp and the SDKs leave a few hundred thousand of them
that live as long as the process, which made full collections the gateway's latency tail. So,
once the app is imported, everything alive is moved out of the collector's sight (`gc.freeze`:
those objects are never scanned again, and never freed, which is what they are anyway), and the
young generation is collected less often, since each request allocates a few hundred short-lived
objects that reference counting frees on its own. The one collection before the freeze (~0.1 s)
happens while the runtime indexes the app, before any request, not on the first request.
"""

from __future__ import annotations

import gc

#: Young-generation threshold (CPython's default is 2,000 allocations); older generations keep theirs.
YOUNG_THRESHOLD = 20_000


def freeze_loaded_heap() -> None:
    """Call once the app's modules are imported: collect once, then freeze what is alive.
    Once per process: a heap already frozen (by an earlier app in the same process) is left alone."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)

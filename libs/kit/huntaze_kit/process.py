"""What every long-running service process does once it has started."""

from __future__ import annotations

import gc

# Tracked objects allocated minus freed before a young-generation collection (Python's default:
# 700). See `settle_heap`.
YOUNG_GENERATION_THRESHOLD = 10_000


def settle_heap(*, young_threshold: int = YOUNG_GENERATION_THRESHOLD) -> None:
    """Tunes the cyclic garbage collector for serving, once start-up is done.

    Everything made at start-up (modules, classes, the app and its routes, clients) lives as
    long as the process: `gc.freeze()` takes it out of the collector's sight, so a full
    collection no longer walks some 100,000 objects (tens of milliseconds, during which every
    request in flight waits). And the young generation's count is allocations minus frees of
    tracked objects: with dozens of requests in flight it swings by thousands, so at the default
    threshold the collector ran every few requests, promoted in-flight objects to older
    generations and so set off full collections. Measured on the gateway under load: about
    70 microseconds of collection per request before, next to none after.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, oldest)

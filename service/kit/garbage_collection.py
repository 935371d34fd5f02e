"""Garbage-collector settings for the long-running processes (API, consumers).

A consumer batch creates ~100,000 container objects that live until the batch is done, and
the process keeps large memo caches (trace-code parses, first-seen addresses). With
CPython's default thresholds (a young collection every 700 allocations) the collector kept
re-scanning both: measured, decoding an event cost 57 us with the defaults and 14 us with
these settings. Almost nothing here forms reference cycles (freed by reference counting),
so collecting rarely costs little memory."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
# A consumer holds two batches at once (one written, the next decided), some 300,000 live
# containers each, all freed by reference counting. The young count is allocations less
# deallocations, so below their sum every young collection scans them all and frees nothing:
# measured, 11-45 ms each, 1.5 a batch (~5 us a code). Above it, collections are rare.
BATCH_YOUNG_THRESHOLD = 1_000_000
OLDER_THRESHOLDS = (20, 100)


def tune_for_throughput(young: int = YOUNG_THRESHOLD) -> None:
    """Call once start-up is done: what exists now (modules, clients) lives for the whole
    process and is moved out of the collector's sight; collections become rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *OLDER_THRESHOLDS)

"""The worker gives freed heap pages back once closes have settled (one trim per burst)."""

from __future__ import annotations

import gc
import sys
import weakref

import pytest

from studyrooms.clock import FakeClock
from studyrooms.sfu.memory import MemoryTrimmer, rss_bytes, trim


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_freed_buffers_go_back_to_the_system():
    before = rss_bytes()
    chunks = [bytearray(1200) for _ in range(60_000)]  # ~70 MiB of packet-sized buffers (malloc)
    grown = rss_bytes()
    del chunks[:-1]  # all but the last: the heap's top stays in use, so only malloc_trim can return it
    assert grown - before > 50 << 20
    assert trim() is True
    assert rss_bytes() - before < 0.5 * (grown - before)


def test_a_burst_of_closes_costs_one_trim_after_the_delay():
    clock = FakeClock()
    trimmer = MemoryTrimmer(clock, delay_s=2.0)
    for _ in range(5):
        trimmer.closed_something()
        clock.advance(0.5)
    assert trimmer.trims == 0
    clock.advance(2.0)
    assert trimmer.trims == (1 if sys.platform.startswith("linux") else 0)
    assert set(trimmer.stats()) == {"rssBytes", "trims", "releasedBytes", "collected", "lastTrimMs"}
    off = MemoryTrimmer(clock, delay_s=0)
    off.closed_something()
    clock.advance(10)
    assert off.trims == 0


def test_the_trim_frees_what_only_the_collector_can_free_first():
    """A closed object kept in a reference cycle (a transport and its listeners) holds its buffers
    until a full collection, which an idle worker does not trigger by itself: the trimmer runs one."""

    class Closed:
        pass

    enabled = gc.isenabled()
    gc.disable()  # as in a quiet worker: no automatic collection meanwhile
    try:
        closed = Closed()
        closed.listeners = [closed.__init__]  # the cycle: object -> bound method -> object
        closed.buffer = bytearray(1 << 20)
        alive = weakref.ref(closed)
        del closed
        assert alive() is not None  # refcounting alone does not free it
        clock = FakeClock()
        trimmer = MemoryTrimmer(clock, delay_s=2.0)
        trimmer.closed_something()
        clock.advance(2.0)
        assert alive() is None
        assert trimmer.stats()["collected"] >= 3  # the object, its dict, the list (and the method)
    finally:
        if enabled:
            gc.enable()

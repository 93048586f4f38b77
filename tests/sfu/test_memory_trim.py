"""The worker gives freed heap pages back once closes have settled (one trim per burst)."""

from __future__ import annotations

import sys

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
    assert set(trimmer.stats()) == {"rssBytes", "trims", "releasedBytes"}
    off = MemoryTrimmer(clock, delay_s=0)
    off.closed_something()
    clock.advance(10)
    assert off.trims == 0

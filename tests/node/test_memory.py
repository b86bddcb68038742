"""The replica's memory figures: resident set, Python's allocator and glibc's malloc."""

from __future__ import annotations

import sys

import pytest

from bft.node.memory import Malloc, resident_bytes, snapshot


def vm_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_resident_set_matches_the_kernel() -> None:
    rss = resident_bytes()
    assert rss is not None
    assert abs(rss - vm_rss()) < 8 << 20


def test_malloc_figures_follow_allocations() -> None:
    malloc = Malloc()
    if malloc.stats() is None:
        pytest.skip("no glibc mallinfo2 here")
    before = snapshot(malloc)
    held = [bytes(1000) + bytes([i % 256]) for i in range(20_000)]  # above pymalloc's 512 B
    during = snapshot(malloc)
    assert during["malloc_in_use"] - before["malloc_in_use"] >= 18_000_000
    assert during["python_blocks"] >= before["python_blocks"]
    del held
    after = snapshot(malloc)
    assert during["malloc_in_use"] - after["malloc_in_use"] >= 18_000_000
    # Freed chunks stay in the arena until trimmed; the trim must not lose anything live.
    malloc.trim()
    assert snapshot(malloc)["malloc_in_use"] <= after["malloc_in_use"] + (1 << 20)

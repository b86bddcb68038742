"""Where storage calls run: on the event loop while the disk is quick, on a worker thread when it
waits, back on the loop when probes find it quick again; always under the store's limiter."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest
import trio

from bft.node.disk import ALPHA, OUTLIER_CAP, PROBE_EVERY, BlockedClock, DiskRunner


def _where() -> int:
    return threading.get_ident()


def _wait_for_disk(seconds: float) -> int:
    # A disk that blocks the calling thread, off the CPU, as a slow fsync does. The runner
    # measures real blocked time (wall less CPU less run-queue wait), so virtual time cannot
    # stand in here: this sleep is the thing measured, not a wait for a condition.
    time.sleep(seconds)
    return threading.get_ident()


async def test_quick_calls_run_on_the_event_loop() -> None:
    stats: Counter[str] = Counter()
    runner = DiskRunner(0.002, trio.CapacityLimiter(1), stats)
    for _ in range(50):
        assert await runner.run(_where) == threading.get_ident()
    assert runner.inline and stats["disk_calls_on_loop"] == 50
    assert stats["disk_calls_on_thread"] == 0


async def test_waiting_calls_move_to_a_thread_and_come_back_when_quick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats: Counter[str] = Counter()
    runner = DiskRunner(0.002, trio.CapacityLimiter(1), stats, replica=3)
    loop = threading.get_ident()
    with caplog.at_level(logging.INFO, logger="bft.node.disk"):
        calls = 0
        while runner.inline:
            await runner.run(_wait_for_disk, 0.01)
            calls += 1
        # Each 10 ms call counts as 4 ms (twice the limit): seven move the average over 2.
        assert calls <= 7 and stats["disk_moves_to_thread"] == 1
        assert await runner.run(_wait_for_disk, 0.01) != loop  # on a worker thread now
        assert "replica 3: storage calls move to a worker thread" in caplog.text
        # The disk is quick again: only the probes (one call in PROBE_EVERY) measure it.
        on_loop_before = stats["disk_calls_on_loop"]
        calls = 0
        while not runner.inline:
            await runner.run(_where)
            calls += 1
        probes = stats["disk_calls_on_loop"] - on_loop_before
        assert 2 <= probes <= 3 and calls >= probes * PROBE_EVERY - 1
        assert stats["disk_moves_to_loop"] == 1
        assert "back on the event loop" in caplog.text
    assert await runner.run(_where) == loop


def test_one_stall_does_not_move_the_calls_and_a_slow_disk_does() -> None:
    # fsync has a long tail: one call that waits 40 ms among quick ones is not a slow disk.
    runner = DiskRunner(0.003, trio.CapacityLimiter(1), Counter())
    for _ in range(50):
        runner.observe(0.001)
    runner.observe(0.040)
    assert runner.inline, runner.status()
    assert runner.average_s <= 0.001 + ALPHA * (OUTLIER_CAP * 0.003 - 0.001) + 1e-9
    for _ in range(20):
        runner.observe(0.001)
    # A disk whose every call now blocks 40 ms moves the calls within a few of them.
    calls = 0
    while runner.inline:
        runner.observe(0.040)
        calls += 1
    assert calls <= 6, calls


def test_probes_bring_the_calls_back_within_a_few() -> None:
    stats: Counter[str] = Counter()
    runner = DiskRunner(0.003, trio.CapacityLimiter(1), stats)
    while runner.inline:
        runner.observe(0.010)
    probes = 0
    while not runner.inline:
        runner.observe(0.0005, probe=True)
        probes += 1
    assert probes <= 3 and stats["disk_moves_to_loop"] == 1, probes


async def test_a_limit_of_zero_keeps_every_call_on_a_thread() -> None:
    stats: Counter[str] = Counter()
    runner = DiskRunner(0.0, trio.CapacityLimiter(1), stats)
    for _ in range(PROBE_EVERY * 2):
        assert await runner.run(_where) != threading.get_ident()
    assert not runner.inline and stats["disk_calls_on_loop"] == 0


async def test_a_call_on_the_loop_waits_for_storage_work_holding_the_limiter() -> None:
    limiter = trio.CapacityLimiter(1)
    runner = DiskRunner(0.002, limiter, Counter())
    order: list[str] = []

    async def other_storage_work() -> None:
        async with limiter:
            order.append("other starts")
            await trio.sleep(0.05)
            order.append("other ends")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_storage_work)
        await trio.sleep(0.01)
        await runner.run(lambda: order.append("call"))
    assert order == ["other starts", "other ends", "call"]


async def test_an_error_reaches_the_caller_and_releases_the_limiter() -> None:
    limiter = trio.CapacityLimiter(1)
    runner = DiskRunner(0.002, limiter, Counter())

    def full() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await runner.run(full)
    assert limiter.borrowed_tokens == 0


def test_blocked_time_counts_waiting_not_computing() -> None:
    clock = BlockedClock()
    before = clock.sample()
    total = 0
    began = time.perf_counter()
    while time.perf_counter() - began < 0.03:  # 30 ms on the CPU
        total += 1
    computing = clock.blocked_since(before)
    before = clock.sample()
    time.sleep(0.03)  # 30 ms blocked
    waiting = clock.blocked_since(before)
    clock.close()
    assert computing < 0.01 and waiting > 0.02

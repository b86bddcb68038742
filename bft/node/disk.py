"""Where the replica's commit-path storage calls run: on the event loop while they are quick, on
a worker thread when they are not.

Every block costs a replica two or three synchronous writes (the protocol log before its votes
go out, the ledger when it commits), each ending in ``fsync``. On a worker thread each one
costs a hand-off both ways and, under load, a fight for the GIL with the event loop: measured
on this project's 2-core testbed (PBFT n=4, one request at a time), a replica spent 5.1 ms of
CPU per block with every call on a thread and 4.0 ms with them on the loop, and p50 latency
went from 13.0 to 10.3 ms; at saturation 7,507 -> 8,185 tx/s. A call done on the loop blocks
it, though: on a disk whose ``fsync`` takes milliseconds the replica would stop reading its
peers meanwhile. Where the line lies was measured too: at saturation, with calls blocked about
1.5 ms each on average (four replicas syncing one disk), all calls on the loop still gave
10,350 / 10,420 / 9,918 tx/s against 9,786 / 9,728 / 9,743 with all on threads; hence a
default limit of 3 ms (``[disk] inline_below_ms``).

So :class:`DiskRunner` times every call it runs on the loop, and keeps a moving average of
the time the call spent *blocked* (wall time less the thread's CPU time, less the time it
waited for a CPU: what is left is waiting for the disk), which is what a worker thread would
have let the loop use. While the average
stays at or below ``inline_below_s`` calls run on the loop; above it they move to a worker
thread. From there one call in ``PROBE_EVERY`` runs on the loop again to measure, and the calls
come back once the average is under half the limit. ``inline_below_s = 0`` keeps every call on
a thread. All calls, wherever they run, hold the store's one capacity limiter, so they never
overlap the other storage work (index batches, block reads) that runs on threads.

A single call counts for at most ``OUTLIER_CAP`` times the limit. ``fsync`` latency has a long
tail (a journal commit now and then takes tens of milliseconds), and uncapped, one such call
lifted the average over the limit by itself: in a 10-replica HotStuff testbed at saturation,
half the replicas moved to threads after one stall while the replicas that stayed measured
0.8-1.0 ms, and with only probes to measure they stayed there for the rest of the run. Over
five alternating pairs of 20,000-transaction runs, capping took that testbed from a median of
1,563 tx/s (1 to 6 replicas moved per run) to 1,897 (none moved). A disk whose calls keep
blocking longer than the limit still moves them within a few calls; a probe weighs
``PROBE_ALPHA``, as it stands for the ``PROBE_EVERY`` calls around it, so calls come back within
a few probes once the disk is quick again.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from .logs import event as log_event

log = logging.getLogger(__name__)

T = TypeVar("T")

ALPHA = 0.1
"""Weight of the newest call in the moving average."""
PROBE_EVERY = 32
"""On threads, one call in this many runs on the loop to measure the disk again."""
PROBE_ALPHA = 0.5
"""Weight of a probe in the moving average (it stands for the calls it was taken among)."""
OUTLIER_CAP = 2.0
"""One call counts for at most this many times the limit: a lone stall does not move the calls."""


class DiskRunner:
    def __init__(
        self,
        inline_below_s: float,
        limiter: trio.CapacityLimiter,
        stats: Counter[str],
        replica: int = 0,
    ) -> None:
        self.inline_below_s = inline_below_s
        self.inline = inline_below_s > 0
        self.average_s = 0.0
        self.limiter = limiter
        self.stats = stats
        self.replica = replica
        self._calls_since_probe = 0
        self._clock = BlockedClock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, on the loop or on a worker thread (see the module's docstring)."""
        probe = False
        if not self.inline:
            self._calls_since_probe += 1
            if self.inline_below_s <= 0 or self._calls_since_probe < PROBE_EVERY:
                self.stats["disk_calls_on_thread"] += 1
                return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
            self._calls_since_probe = 0
            probe = True
        limiter = self.limiter
        try:
            # Nearly always free (storage work on threads is rare): taken without the two
            # scheduler passes of ``async with`` (2 us here against 10 us).
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await limiter.acquire()
        try:
            clock = self._clock
            before = clock.sample()
            result = fn(*args)
            blocked = clock.blocked_since(before)
        finally:
            limiter.release()
        self.stats["disk_calls_on_loop"] += 1
        self.observe(blocked, probe=probe)
        return result

    def observe(self, blocked: float, *, probe: bool = False) -> None:
        """Fold one call's blocked time in (``probe``: a call measured from thread mode); move
        the calls between the loop and a thread."""
        limit = self.inline_below_s
        blocked = min(blocked, OUTLIER_CAP * limit)
        self.average_s += (PROBE_ALPHA if probe else ALPHA) * (blocked - self.average_s)
        if self.inline and self.average_s > limit:
            self.inline = False
            self.stats["disk_moves_to_thread"] += 1
            log.info(
                "replica %d: storage calls move to a worker thread: they block %.2f ms on "
                "average, more than [disk] inline_below_ms = %g",
                self.replica, self.average_s * 1e3, limit * 1e3,
                extra=log_event("disk-mode"),
            )  # fmt: skip
        elif not self.inline and self.average_s < limit / 2:
            self.inline = True
            self.stats["disk_moves_to_loop"] += 1
            log.info(
                "replica %d: storage calls back on the event loop (they block %.2f ms on average)",
                self.replica, self.average_s * 1e3,
                extra=log_event("disk-mode"),
            )  # fmt: skip

    def close(self) -> None:
        self._clock.close()

    def status(self) -> dict[str, Any]:
        return {
            "on_loop": self.inline,
            "average_blocked_ms": round(self.average_s * 1e3, 3),
            "inline_below_ms": self.inline_below_s * 1e3,
        }


class BlockedClock:
    """How long the calling thread was blocked (waiting for I/O, not for a CPU).

    Wall time less the thread's CPU time, less the time it spent runnable but waiting for a CPU
    (Linux reports that in ``/proc/thread-self/schedstat``): on a busy machine a call that was
    preempted would otherwise look like one that waited for the disk. Where the file cannot be
    read, the run-queue part is taken as zero. Use it from one thread (the file is that thread's).
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._opened = False

    def _run_delay(self) -> float:
        if not self._opened:  # opened by the thread that measures: the file is per thread
            self._opened = True
            try:
                self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            except OSError:
                return 0.0
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            self.close()
            return 0.0

    def sample(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.thread_time(), self._run_delay()

    def blocked_since(self, before: tuple[float, float, float]) -> float:
        wall, cpu, queued = self.sample()
        return max(0.0, (wall - before[0]) - (cpu - before[1]) - (queued - before[2]))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

"""A load generator that drives a cluster through the client library.

Two disciplines:

* **open loop** (``rate``): transaction ``i`` is due at ``start + i / rate`` whatever happened to
  the earlier ones, which is how independent users behave and what exposes queueing latency. At
  most the client's ``max_inflight`` are outstanding; one due while all are taken waits its turn
  (in order) with its latency counted from when it was due (:func:`open_loop`);
* **closed loop** (``window``): ``window`` submissions are outstanding at any time; each one that
  finishes lets the next one go, which finds the throughput the cluster sustains. One task feeds
  them through ``Client.send``, whose callbacks count the outcomes: no task per transaction.

Every outcome is counted: *committed* (a verified receipt), *refused* (the replicas said no:
never committed) and *indeterminate* (not committed in time: it may still commit, never twice).
Latency is measured per committed transaction, to its verified receipt from when it was due
(open loop) or from when it was sent (closed loop).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from bft.client import ClientError, NotCommitted, Rejected, open_client
from bft.client.client import Client, ClientConfig, Outcome
from ledger import Receipt

DEFAULT_WINDOW = 1000


@dataclass
class LoadResult:
    count: int
    submitted: int = 0
    committed: int = 0
    refused: int = 0
    indeterminate: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    receipts: list[Receipt] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.committed + self.refused + self.indeterminate

    @property
    def tx_per_s(self) -> float:
        return self.committed / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile of commit latency in milliseconds (nearest rank)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    def summary(self) -> dict[str, float | int | None]:
        """The figures, JSON-ready (a latency is ``None`` when nothing committed)."""

        def ms(p: float) -> float | None:
            value = self.percentile(p)
            return None if math.isnan(value) else round(value, 2)

        return {
            "submitted": self.submitted,
            "committed": self.committed,
            "refused": self.refused,
            "indeterminate": self.indeterminate,
            "seconds": round(self.seconds, 3),
            "tx_per_s": round(self.tx_per_s, 1),
            "p50_ms": ms(50),
            "p95_ms": ms(95),
            "p99_ms": ms(99),
        }


def payload(index: int, size: int) -> bytes:
    """A distinct payload of ``size`` bytes (at least 8) for transaction ``index``."""
    head = b"tx %d " % index
    return (head + b"." * max(0, size - len(head)))[: max(size, len(head))]


async def open_loop(
    send: Callable[[int, float], Awaitable[None]],
    *,
    rate: float,
    count: int | None = None,
    until: float | None = None,
    start: float | None = None,
) -> None:
    """Call ``send(index, due)`` for ``index`` = 0, 1, ..., each at its due time ``start +
    index / rate`` (``start``: now if not given, on Trio's clock), one after another from this
    one task. ``send`` returns once its transaction is queued (``Client.send``), waiting only
    while the client has no free slot: what falls due meanwhile goes as slots free, in index
    order, and its latency still counts from ``due`` (no coordinated omission). Stops before
    ``count`` or before the first index due at or after ``until``.

    No task per transaction: a task per transaction, parked on the client's slots, cost the
    load process more CPU the further the cluster fell behind (at 8,000/s offered to a PBFT
    n=4 testbed that commits 6,000, 80 % of a core instead of 50 %, on the same two cores as
    the replicas, which then committed 3,400-4,000/s)."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    t0 = trio.current_time() if start is None else start
    index = 0
    while count is None or index < count:
        due = t0 + index / rate
        if until is not None and due >= until:
            return
        if due > trio.current_time():
            await trio.sleep_until(due)
        await send(index, due)
        index += 1


async def closed_loop(
    client: Client,
    result: LoadResult,
    count: int,
    window: int,
    size: int,
    count_outcome: Callable[[float, Outcome], None],
) -> None:
    """Send transactions 0 .. ``count - 1`` (counted in ``result.submitted``) with at most
    ``window`` of them open; each outcome goes to ``count_outcome(sent_at, outcome)``. Returns
    once every one has settled."""
    open_now = 0
    room = trio.Event()  # set when a settled transaction makes room or the last one settles
    settled = 0

    def done(began: float, outcome: Outcome) -> None:
        nonlocal open_now, settled
        open_now -= 1
        settled += 1
        count_outcome(began, outcome)
        room.set()

    for index in range(count):
        while open_now >= window:
            await room.wait()
            room = trio.Event()
        open_now += 1
        result.submitted += 1
        await client.send(payload(index, size), partial(done, trio.current_time()))
    while settled < count:
        await room.wait()
        room = trio.Event()


async def drive(
    client: Client,
    *,
    count: int,
    rate: float | None = None,
    window: int | None = None,
    size: int = 256,
    keep_receipts: bool = False,
    progress: Callable[[LoadResult], None] | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Submit ``count`` transactions through ``client`` (open loop at ``rate`` per second, or
    closed loop with ``window`` outstanding); return the counts and latencies."""
    if count < 0:
        raise ValueError("count must not be negative")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    if window is not None and window < 1:
        raise ValueError("window must be at least 1")
    if rate is not None and window is not None:
        raise ValueError("give a rate (open loop) or a window (closed loop), not both")
    result = result if result is not None else LoadResult(count)
    window = window if window is not None or rate is not None else DEFAULT_WINDOW
    clock = time.perf_counter

    settled = trio.Event()  # set as outcomes come in (the open loop waits for the last one)

    def count_outcome(began: float, outcome: Outcome) -> None:
        settled.set()
        if isinstance(outcome, Rejected):
            result.refused += 1
            result.errors[outcome.reason[:80]] += 1
        elif isinstance(outcome, NotCommitted):
            result.indeterminate += 1
        elif isinstance(outcome, ClientError):
            result.indeterminate += 1
            result.errors[type(outcome).__name__] += 1
        else:
            result.latencies.append(trio.current_time() - began)
            result.committed += 1
            if keep_receipts:
                result.receipts.append(outcome)

    async def one(index: int, due: float) -> None:
        result.submitted += 1
        await client.send(payload(index, size), partial(count_outcome, due))

    async def paced(rate: float) -> None:
        nonlocal settled
        await open_loop(one, rate=rate, count=count)
        while result.finished < result.submitted:
            await settled.wait()
            settled = trio.Event()

    started = clock()

    async def report() -> None:
        while True:
            result.seconds = clock() - started
            if progress is not None:
                progress(result)
            await trio.sleep(0.1)

    async with trio.open_nursery() as outer:
        outer.start_soon(report)
        async with trio.open_nursery() as nursery:
            if rate is not None:
                nursery.start_soon(paced, rate)
            else:
                nursery.start_soon(
                    closed_loop, client, result, count, window or 1, size, count_outcome
                )
        outer.cancel_scope.cancel()
    result.seconds = clock() - started
    if progress is not None:
        progress(result)
    return result


async def run_load(
    config: ClientConfig,
    *,
    count: int,
    rate: float | None = None,
    window: int | None = None,
    size: int = 256,
    keep_receipts: bool = False,
    progress: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Open a client on ``config`` and :func:`drive` the load through it."""
    async with open_client(config) as client:
        return await drive(
            client,
            count=count,
            rate=rate,
            window=window,
            size=size,
            keep_receipts=keep_receipts,
            progress=progress,
        )

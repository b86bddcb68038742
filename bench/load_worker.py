"""One load-generator process of the cluster benchmark (``bench.cluster_bench`` starts them).

It drives a testbed through the client library, exactly as an application would, for a fixed
time, and prints its figures as one JSON line on standard output. The exchange with the
benchmark that started it::

    worker -> stdout   {"ready": true, ...}       once its clients are connected to every replica
    stdin  -> worker   go                         start now (all workers get it at the same time)
    worker -> stdout   {"result": {...}}          after the run and the drain

Two disciplines (as ``bft testbed load``):

* closed loop (``--window W``): W submissions outstanding; each that finishes lets the next one
  go. ``--window 1`` is the light-load latency run. One task per client sends through
  ``Client.send`` and callbacks count the outcomes, as a high-rate producer would use the
  library (``submit`` costs a task switch per transaction: 25 % more load-process CPU).
* open loop (``--rate R``): transaction ``i`` is due at ``t0 + i/R`` whatever happened to the
  earlier ones. Its latency is counted **from the moment it was due**, not from when a client
  slot let it go, so a saturated cluster shows its queueing (no coordinated omission).

A run lasts ``--duration`` seconds from ``go``; then no new transaction is submitted and the
outstanding ones, and in open loop those due that wait for a client slot, get ``--drain`` seconds
to finish (the rest are *unfinished*, or *not sent* if still waiting). Every payload
starts with ``--tag``, so the benchmark can find this run's transactions in the ledgers.

Run by hand: ``python -m bench.load_worker --cluster DIR --window 1 --duration 3 --tag t1``,
then type ``go``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import trio

from bft.client import ClientError, NotCommitted, Outcome, Rejected, open_client
from bft.client.client import Client, ClientConfig
from bft.node.memory import tune_gc
from bft.testbed.load import open_loop
from crypto import SigningKey

PER_CLIENT_INFLIGHT = 1000
"""Outstanding requests per client (below the replicas' per-client window of 1024)."""


def make_payload(tag: bytes, index: int, size: int) -> bytes:
    """``size`` bytes starting with ``tag`` and the index: distinct, and findable in a ledger."""
    head = b"%s%d." % (tag, index)
    if len(head) >= size:
        return head
    return head + b"x" * (size - len(head))


@dataclasses.dataclass
class Tally:
    submitted: int = 0
    acked_in_window: int = 0
    acked_total: int = 0
    refused: int = 0
    indeterminate: int = 0
    inflight: int = 0
    inflight_at_end: int = 0
    last_ack: float = 0.0
    latencies_us: list[int] = dataclasses.field(default_factory=list)
    first_half_us: list[int] = dataclasses.field(default_factory=list)
    second_half_us: list[int] = dataclasses.field(default_factory=list)
    t_mid: float = 0.0
    steady_from: float = 0.0
    steady_to: float = 0.0
    acked_steady: int = 0
    """Acknowledgements between ``steady_from`` (a quarter into the run) and the end of the
    run: once the first transactions have made it through, the rate at which a cluster that
    keeps up commits equals the offered rate, whatever its latency."""
    """Transactions due before this are in the run's first half: a cluster that does not keep
    up with an open-loop rate shows a second half slower than the first (its queue grows)."""
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    closed: bool = False
    """Set once the run's figures are taken: what the clients settle as they close (their open
    requests come to NotCommitted) is counted as unfinished already."""


def percentiles(latencies_us: Sequence[int]) -> dict[str, float | None]:
    """p50/p90/p95/p99/p99.9, mean and max in milliseconds (nearest rank)."""
    if not latencies_us:
        return {k: None for k in ("p50", "p90", "p95", "p99", "p999", "mean", "max")}
    ordered = sorted(latencies_us)

    def rank(p: float) -> float:
        i = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return round(ordered[i] / 1000, 3)

    return {
        "p50": rank(50),
        "p90": rank(90),
        "p95": rank(95),
        "p99": rank(99),
        "p999": rank(99.9),
        "mean": round(sum(ordered) / len(ordered) / 1000, 3),
        "max": round(ordered[-1] / 1000, 3),
    }


def _count(outcome: Outcome, due: float, t_end: float, tally: Tally) -> None:
    """One transaction's outcome into the tally (latency from ``due``)."""
    if tally.closed:
        return
    tally.inflight -= 1
    if isinstance(outcome, Rejected):
        tally.refused += 1
        tally.errors[f"refused: {outcome.reason[:60]}"] += 1
        return
    if isinstance(outcome, NotCommitted):
        tally.indeterminate += 1
        return
    if isinstance(outcome, ClientError):
        tally.indeterminate += 1
        tally.errors[type(outcome).__name__] += 1
        return
    now = trio.current_time()
    tally.acked_total += 1
    tally.last_ack = max(tally.last_ack, now)
    if tally.steady_from <= now <= tally.steady_to:
        tally.acked_steady += 1
    if now <= t_end:
        tally.acked_in_window += 1
    latency = round((now - due) * 1e6)
    tally.latencies_us.append(latency)
    (tally.first_half_us if due < tally.t_mid else tally.second_half_us).append(latency)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"timeout": args.duration + args.drain + 5}
    if args.batch_max is not None:
        options["batch_max"] = args.batch_max
    if args.linger is not None:
        options["linger"] = args.linger / 1000
    base = ClientConfig.from_cluster(args.cluster, sign=args.sign, **options)
    if args.rate is not None:
        clients_needed = max(1, args.clients)
    else:
        clients_needed = max(args.clients, math.ceil(args.window / PER_CLIENT_INFLIGHT))
    tag = args.tag.encode()
    tally = Tally()
    async with AsyncExitStack() as stack:
        clients: list[Client] = []
        for i in range(clients_needed):
            # Each client its own identity (a signing key when signing), so sequence numbers
            # never collide between clients or worker processes. With --identities, unsigned
            # clients take the same identities in every worker of that name (an application's
            # clients that restart), numbering above the last worker's (from the clock).
            identity = None
            if args.identities is not None and not args.sign:
                identity = hashlib.sha256(f"{args.identities}/{i}".encode()).digest()[:16]
            config = dataclasses.replace(
                base,
                signing_key=SigningKey.generate() if args.sign else base.signing_key,
                client_id=identity,
                max_inflight=PER_CLIENT_INFLIGHT,
            )
            clients.append(
                await stack.enter_async_context(open_client(config, wait=len(base.replicas)))
            )
        print(json.dumps({"ready": True, "clients": len(clients)}), flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        if line.strip() != "go":
            return {"error": f"expected 'go', got {line.strip()!r}"}
        cpu0, wall0 = time.process_time(), time.perf_counter()
        t0 = trio.current_time()
        t_end = t0 + args.duration
        tally.t_mid = t0 + args.duration / 2
        tally.steady_from, tally.steady_to = t0 + args.duration / 4, t_end
        cpu_window = 0.0
        async with trio.open_nursery() as outer:

            async def stop_at_end() -> None:
                nonlocal cpu_window
                await trio.sleep_until(t_end)
                cpu_window = time.process_time() - cpu0
                tally.inflight_at_end = tally.inflight
                outer.cancel_scope.deadline = t_end + args.drain

            outer.start_soon(stop_at_end)
            async with trio.open_nursery() as nursery:
                if args.rate is not None:
                    # Open loop: one task sends each transaction at its due time (Client.send
                    # waits only for a free slot); callbacks count the outcomes from ``due``.
                    settled = trio.Event()

                    def count_due(due: float, outcome: Outcome) -> None:
                        _count(outcome, due, t_end, tally)
                        settled.set()

                    async def send(index: int, due: float) -> None:
                        await clients[index % len(clients)].send(
                            make_payload(tag, index, args.size), partial(count_due, due)
                        )
                        # Counted once queued (its callback runs later, from the client's
                        # tasks); one still waiting for a slot at the end is "not sent".
                        tally.submitted += 1
                        tally.inflight += 1

                    async def paced(rate: float) -> None:
                        nonlocal settled
                        await open_loop(send, rate=rate, start=t0, until=t_end)
                        while tally.inflight:  # until the drain deadline cancels the rest
                            await settled.wait()
                            settled = trio.Event()

                    nursery.start_soon(paced, args.rate)
                else:
                    # Closed loop: ``window`` transactions open, shared among the clients; one
                    # task per client sends (Client.send), the callbacks count the outcomes.
                    counter = iter(range(sys.maxsize))

                    async def loop(client: Client, share: int) -> None:
                        open_now = 0
                        room = trio.Event()

                        def settled(due: float, outcome: Outcome) -> None:
                            nonlocal open_now
                            open_now -= 1
                            _count(outcome, due, t_end, tally)
                            room.set()

                        while trio.current_time() < t_end:
                            if open_now >= share:
                                await room.wait()
                                room = trio.Event()
                                continue
                            index = next(counter)
                            open_now += 1
                            await client.send(
                                make_payload(tag, index, args.size),
                                partial(settled, trio.current_time()),
                            )
                            tally.submitted += 1
                            tally.inflight += 1
                        while open_now:  # until the drain deadline cancels the rest
                            await room.wait()
                            room = trio.Event()

                    for i, client in enumerate(clients):
                        share = args.window // len(clients) + (i < args.window % len(clients))
                        if share:
                            nursery.start_soon(loop, client, share)
            outer.cancel_scope.cancel()
        finished = tally.acked_total + tally.refused + tally.indeterminate
        unfinished = tally.submitted - finished
        tally.closed = True
        not_sent = 0
        if args.rate is not None:
            # Due in the run but still waiting for a client slot when the drain ran out.
            due = math.ceil(args.duration * args.rate)
            while due > 0 and t0 + (due - 1) / args.rate >= t_end:
                due -= 1
            while t0 + due / args.rate < t_end:
                due += 1
            not_sent = due - tally.submitted
        if not cpu_window:
            cpu_window = time.process_time() - cpu0
        stats: Counter[str] = Counter()
        for client in clients:
            stats.update(client.stats)
    return {
        "submitted": tally.submitted,
        "acked_in_window": tally.acked_in_window,
        "acked_total": tally.acked_total,
        "refused": tally.refused,
        "indeterminate": tally.indeterminate,
        "unfinished": unfinished,
        "not_sent": not_sent,
        "inflight_at_end": tally.inflight_at_end,
        "duration": args.duration,
        "last_ack_s": round(tally.last_ack - t0, 4) if tally.acked_total else None,
        "steady_tps": round(tally.acked_steady / (0.75 * args.duration), 1),
        "wall": round(time.perf_counter() - wall0, 3),
        "cpu_window_s": round(cpu_window, 4),
        "latency_ms": percentiles(tally.latencies_us),
        "p50_halves_ms": [
            percentiles(tally.first_half_us)["p50"],
            percentiles(tally.second_half_us)["p50"],
        ],
        "latencies_us": tally.latencies_us if args.raw_latencies else [],
        "client_stats": dict(stats),
        "errors": dict(tally.errors.most_common(5)),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--cluster", required=True, help="the testbed's cluster directory")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--window", type=int, help="closed loop: requests outstanding")
    mode.add_argument("--rate", type=float, help="open loop: transactions per second")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load (default 5)")
    p.add_argument("--drain", type=float, default=10.0, help="seconds to let the last finish")
    p.add_argument("--size", type=int, default=256, help="payload bytes (default 256)")
    p.add_argument("--sign", action="store_true", help="sign every transaction (Ed25519)")
    p.add_argument("--clients", type=int, default=1, help="client objects (own identities)")
    p.add_argument(
        "--identities",
        metavar="NAME",
        help="unsigned clients reuse the identities named NAME (the same in every worker)",
    )
    p.add_argument("--batch-max", type=int, help="client batch_max (transactions per Submit)")
    p.add_argument("--linger", type=float, help="client linger in milliseconds")
    p.add_argument("--tag", default="bench.", help="payload prefix that marks this run")
    p.add_argument("--raw-latencies", action="store_true", help="include every latency (us)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.window is not None and args.window < 1:
        raise SystemExit("--window must be at least 1")
    if args.rate is not None and args.rate <= 0:
        raise SystemExit("--rate must be positive")
    tune_gc()
    try:
        result = trio.run(run, args)
    except Exception as exc:  # reported to the benchmark, which shows it
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    if "error" in result:
        print(json.dumps(result), flush=True)
        return 1
    print(json.dumps({"result": result}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

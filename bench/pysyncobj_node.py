"""One PySyncObj node of the cluster benchmark's baseline (``bench.cluster_bench`` starts three).

PySyncObj (https://github.com/bakwc/PySyncObj) is a Raft library in pure Python. Its own
benchmark (``benchmarks/testobj.py``) runs one process per node on loopback, each calling a
``@replicated`` method with a callback from inside the node's process; it keeps the journal in
memory (no fsync) and has no client network path. This node does the same, with a closed loop: a
window of outstanding commands, each that completes (its callback fires) lets the next one go.

Exchange with the benchmark::

    node -> stdout   {"ready": true, "leader": bool}   once a leader is known
    stdin -> node    go
    node -> stdout   {"result": {...}}                 after its commands and a settle

Roles: ``--role all`` (every node submits ``--count`` commands with ``--window`` outstanding) or
``--role leader`` (only the node that leads submits; the others just replicate): the light-load
latency run uses the leader with a window of 1, as our own clients talk to the leader.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Sequence

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated


class Counter(SyncObj):
    def __init__(self, self_addr: str, partners: list[str]) -> None:
        super().__init__(self_addr, partners, SyncObjConf())
        self.__applied = 0
        self.__bytes = 0

    @replicated
    def apply(self, value: bytes) -> None:
        self.__applied += 1
        self.__bytes += len(value)

    def applied(self) -> int:
        return self.__applied


def _percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {k: None for k in ("p50", "p90", "p95", "p99", "p999", "mean", "max")}
    ordered = sorted(latencies)

    def rank(p: float) -> float:
        i = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return round(ordered[i] * 1000, 3)

    return {
        "p50": rank(50),
        "p90": rank(90),
        "p95": rank(95),
        "p99": rank(99),
        "p999": rank(99.9),
        "mean": round(sum(ordered) / len(ordered) * 1000, 3),
        "max": round(ordered[-1] * 1000, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one PySyncObj baseline node")
    p.add_argument("--self", dest="self_addr", required=True, help="HOST:PORT of this node")
    p.add_argument("--partner", action="append", required=True, help="HOST:PORT of a partner")
    p.add_argument("--count", type=int, required=True, help="commands this node submits")
    p.add_argument("--window", type=int, default=100, help="commands outstanding")
    p.add_argument("--size", type=int, default=256, help="bytes per command")
    p.add_argument("--expect", type=int, default=0, help="commands all nodes submit in total")
    p.add_argument("--role", choices=("all", "leader"), default="all")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)

    node = Counter(args.self_addr, args.partner)
    deadline = time.monotonic() + 30
    while node._getLeader() is None or not node.isReady():
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no leader within 30 s"}), flush=True)
            return 1
        time.sleep(0.05)
    print(json.dumps({"ready": True, "leader": bool(node._isLeader())}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    submit = args.role == "all" or node._isLeader()
    count = args.count if submit else 0
    slots = threading.Semaphore(max(1, args.window))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    done = threading.Event()
    finished = 0
    if count == 0:
        done.set()

    def callback(started: float, result: object, error: int) -> None:
        nonlocal finished
        now = time.perf_counter()
        with lock:
            if error == FAIL_REASON.SUCCESS:
                latencies.append(now - started)
            else:
                errors[str(error)] = errors.get(str(error), 0) + 1
            finished += 1
            if finished == count:
                done.set()
        slots.release()

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(count):
        slots.acquire()
        head = b"%d." % i
        value = head + b"x" * max(0, args.size - len(head))
        started = time.perf_counter()
        node.apply(value, callback=lambda r, e, s=started: callback(s, r, e))
    done.wait(args.timeout)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    # Every node applies every node's commands: wait until this one has applied them all.
    expect = args.expect or count
    while node.applied() < expect and time.perf_counter() - t0 < args.timeout:
        time.sleep(0.01)
    applied_at = time.perf_counter() - t0
    result = {
        "submitted": count,
        "succeeded": len(latencies),
        "failed": sum(errors.values()),
        "errors": errors,
        "elapsed": round(elapsed, 4),
        "applied": node.applied(),
        "applied_at": round(applied_at, 4),
        "leader": bool(node._isLeader()),
        "cpu_s": round(cpu, 4),
        "latency_ms": _percentiles(latencies),
    }
    print(json.dumps({"result": result}), flush=True)
    # Stay up until told to go, so the others can finish replicating through us.
    sys.stdin.readline()
    node.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

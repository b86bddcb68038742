"""The load process of the etcd baseline (``bench.cluster_bench`` starts it).

It writes ``--count`` keys of ``--size``-byte values through etcd's v3 API (the JSON gateway:
``POST /v3/kv/put``, as etcdctl's requests but over HTTP/1.1 keep-alive connections), with
``--window`` requests outstanding: one thread per outstanding request, each with its own
connection to one of the ``--endpoint`` members in turn (etcd forwards a follower's proposal to
its leader), each writing its share of the keys one after another. A put is acknowledged once
etcd has committed it to a majority's fsync'd WAL and applied it.

Prints one JSON line: ``{"result": {...}}`` with the count that succeeded, the elapsed time, the
failures and latency percentiles (milliseconds).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit


def _percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {k: None for k in ("p50", "p95", "p99", "max")}
    ordered = sorted(latencies)

    def rank(p: float) -> float:
        i = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return round(ordered[i] * 1000, 3)

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": rank(100)}


def writer(
    endpoint: str,
    first: int,
    count: int,
    value: bytes,
    latencies: list[float],
    failures: list[str],
    timeout: float,
) -> None:
    """Put keys ``first .. first + count - 1`` one after another over one connection."""
    url = urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=timeout)
    encoded = base64.b64encode(value).decode()
    try:
        for i in range(first, first + count):
            body = json.dumps(
                {"key": base64.b64encode(b"bench/%08d" % i).decode(), "value": encoded}
            )
            began = time.perf_counter()
            try:
                conn.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(
                    url.hostname or "127.0.0.1", url.port, timeout=timeout
                )
                continue
            if response.status != 200:
                failures.append(f"HTTP {response.status}: {payload[:200]!r}")
                continue
            latencies.append(time.perf_counter() - began)
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", action="append", required=True, help="http://HOST:PORT")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    window = max(1, min(args.window, args.count))
    value = b"v" * args.size
    share, extra = divmod(args.count, window)
    per_thread: list[list[float]] = [[] for _ in range(window)]
    failures: list[str] = []
    threads = []
    first = 0
    for t in range(window):
        count = share + (1 if t < extra else 0)
        endpoint = args.endpoint[t % len(args.endpoint)]
        threads.append(
            threading.Thread(
                target=writer,
                args=(endpoint, first, count, value, per_thread[t], failures, args.timeout),
                daemon=True,
            )
        )
        first += count
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies = [x for part in per_thread for x in part]
    result = {
        "submitted": args.count,
        "succeeded": len(latencies),
        "failures": len(failures),
        "first_failures": failures[:3],
        "elapsed": round(elapsed, 3),
        "cpu_s": round(time.process_time(), 3),
        "latency_ms": _percentiles(latencies),
    }
    print(json.dumps({"result": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

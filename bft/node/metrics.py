"""A replica's Prometheus metrics (opt-in: ``[metrics] listen = "HOST:PORT"``).

Theory of operation
-------------------
The hot path pays almost nothing: the runtime already counts what it does in plain integers
(``Replica.stats``, the links' statistics, the core's status), and the two histograms here
(commit latency, fsync duration) are a list of bucket counters bumped with one ``bisect``.
Nothing is computed until Prometheus scrapes: then :class:`ReplicaCollector` reads that state
and hands prometheus-client its metric families, and prometheus-client writes the exposition.

The endpoint is served by a small Trio task on the replica's own event loop, not by
prometheus-client's threaded HTTP server, so a scrape reads the replica's state on the thread
that changes it (no locks, no torn reads). It answers ``GET /metrics`` (and ``GET /`` with a
pointer), closes each connection after one answer, reads at most 8 KiB of request within 5 s,
and serves at most 8 scrapes at a time.

Metrics (all prefixed ``bft_``; see docs/operations.md for what to alert on):

=====================================  =========  =============================================
name                                   type       what
=====================================  =========  =============================================
info{protocol,chain_id,replica,...}    gauge      1, with the identity in labels
blocks_committed_total                 counter    blocks appended to the ledger
transactions_committed_total           counter    transactions in them
commit_latency_seconds                 histogram  request admitted here -> reply sent
view_changes_total                     counter    view changes started / elections held
view, leader, is_leader                gauge      current view (term), leader (-1: unknown)
ledger_height                          gauge      ledger height
queue_depth{queue}                     gauge      inbox, mempool, client_out, peer_out, index_lag,
                                                 routes
fsync_seconds{file}                    histogram  durable writes: ledger, protocol_log, index
gc_pause_seconds{generation}           histogram  Python's garbage collector holding the loop
peer_messages_total{peer,direction}    counter    frames to / from each peer
peer_bytes_total{peer,direction}       counter    bytes to / from each peer
peer_connected{peer}                   gauge      1 when the outbound link is up
peer_ledger_height{peer}               gauge      a peer's height, as it last told us
catchup_lag_blocks                     gauge      top height f+1 peers reach (BFT; Raft: any) - ours
catchup_requests_total                 counter    block requests sent to peers
rejected_total{reason}                 counter    remote input refused, by reason
client_sessions                        gauge      connected clients
client_transactions_total{outcome}     counter    received, refused, malformed, settled_again
client_transactions_relayed_total      counter    {direction} sent to the leader, received from
                                                 others (PBFT, Raft)
client_throttled_total                 counter    pauses of a connection over its allowance
client_rate_limited_total              counter    pauses of a connection over its tx or byte rate
evidence_total                         counter    equivocations seen and saved
evidence_dropped_total                 counter    not saved: the evidence store was full
log_lines_suppressed_total             counter    log lines dropped by the rate limiter
uptime_seconds                         gauge      since the process started
memory_bytes{kind}                     gauge      rss, malloc_in_use, malloc_free (glibc)
python_blocks                          gauge      objects held by Python's allocator
=====================================  =========  =============================================
"""

from __future__ import annotations

import contextlib
import gc
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import trio

from .memory import snapshot

if TYPE_CHECKING:  # pragma: no cover
    from .replica import Replica

LATENCY_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip
FSYNC_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
)  # fmt: skip
MAX_REASON_LABELS = 64
"""Reasons exported as labels; the rest are summed under ``other`` (bounded cardinality)."""
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
MAX_SCRAPES = 8


class Histogram:
    """Cumulative-on-export bucket counts, sum and count: cheap to observe."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs, ending with ``+Inf``."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


GC_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
)  # fmt: skip


class GcWatch:
    """Pauses of Python's cyclic garbage collector, per generation (via ``gc.callbacks``).

    A full (generation 2) collection walks every tracked object of the process and holds the
    event loop meanwhile; when the heap grows, these pauses grow with it and show up as tail
    latency. Two clock reads per collection, between :meth:`start` and :meth:`close`.
    """

    __slots__ = ("_began", "collected", "collections", "histograms", "max_pause", "pause_total")

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.collected = [0, 0, 0]  # unreachable objects found
        self.pause_total = [0.0, 0.0, 0.0]
        self.max_pause = [0.0, 0.0, 0.0]
        self.histograms = [Histogram(GC_BUCKETS) for _ in range(3)]
        self._began = 0.0

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        pause = time.perf_counter() - self._began
        generation = min(max(info.get("generation", 0), 0), 2)
        self.collections[generation] += 1
        self.collected[generation] += info.get("collected", 0)
        self.pause_total[generation] += pause
        self.max_pause[generation] = max(self.max_pause[generation], pause)
        self.histograms[generation].observe(pause)

    def status(self) -> dict[str, list[float]]:
        return {
            "collections": list(self.collections),
            "collected": list(self.collected),
            "pause_s": [round(t, 3) for t in self.pause_total],
            "max_pause_ms": [round(t * 1000, 2) for t in self.max_pause],
        }

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)


class ReplicaMetrics:
    """What the runtime measures only for metrics (everything else it counts anyway)."""

    def __init__(self) -> None:
        self.commit_latency = Histogram(LATENCY_BUCKETS)
        self.fsync = {
            name: Histogram(FSYNC_BUCKETS) for name in ("ledger", "protocol_log", "index")
        }


def prometheus_available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def vouched_height(heights: Iterable[int], vouchers: int) -> int:
    """The highest height that at least ``vouchers`` of ``heights`` reach (0 if fewer reported).

    With ``vouchers`` = f + 1 at least one of them is a correct replica, so up to f faulty
    peers that claim a ledger they do not have cannot make a replica look behind."""
    ordered = sorted(heights, reverse=True)
    return ordered[vouchers - 1] if 0 < vouchers <= len(ordered) else 0


class ReplicaCollector:
    """A prometheus-client collector reading a live :class:`Replica`."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families are built at scrape time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        r = self.replica
        stats = r.stats
        core = r.core.status() if r.core is not None else None
        extra = core.extra if core is not None else {}
        height = r.store.height if r.store is not None else 0

        def counter(name: str, doc: str, value: float) -> Any:
            family = CounterMetricFamily(f"bft_{name}", doc)
            family.add_metric([], value)
            return family

        def gauge(name: str, doc: str, value: float) -> Any:
            return GaugeMetricFamily(f"bft_{name}", doc, value=value)

        info = GaugeMetricFamily(
            "bft_info", "The replica's identity", labels=["protocol", "chain_id", "replica"]
        )
        info.add_metric([r.config.protocol, r.chain_id, str(r.replica)], 1)
        yield info
        yield counter(
            "blocks_committed", "Blocks appended to the ledger", stats["blocks_committed"]
        )
        yield counter(
            "transactions_committed",
            "Transactions in committed blocks",
            stats["txs_committed"],
        )
        yield _histogram(
            HistogramMetricFamily,
            "bft_commit_latency_seconds",
            "From a request's admission at this replica to its reply",
            {(): r.metrics.commit_latency} if r.metrics else {},
            [],
        )
        yield counter(
            "view_changes",
            "View changes started (BFT) or elections held (Raft)",
            int(extra.get("view_changes", 0)),
        )
        yield gauge("view", "Current view (term in Raft)", core.view if core else 0)
        leader = core.leader if core is not None and core.leader is not None else -1
        yield gauge("leader", "Current leader (-1 when unknown)", leader)
        yield gauge("is_leader", "1 when this replica leads", 1 if leader == r.replica else 0)
        yield gauge("ledger_height", "Ledger height", height)
        table = r.core.clients if r.core is not None else None
        yield gauge(
            "client_table_places",
            "Committed requests remembered for deduplication (max_client_entries bounds it)",
            table.entries if table is not None else 0,
        )
        yield counter(
            "client_table_forgotten",
            "Clients the deduplication table forgot to keep its limits",
            table.evicted if table is not None else 0,
        )
        queues = GaugeMetricFamily("bft_queue_depth", "Items waiting", labels=["queue"])
        for name, depth in r.queue_depths().items():
            queues.add_metric([name], depth)
        yield queues
        yield _histogram(
            HistogramMetricFamily,
            "bft_fsync_seconds",
            "Durable writes (write and fsync)",
            {(k,): h for k, h in r.metrics.fsync.items()} if r.metrics else {},
            ["file"],
        )
        yield _histogram(
            HistogramMetricFamily,
            "bft_gc_pause_seconds",
            "Pauses of the garbage collector, by generation (2: a full collection)",
            {(str(g),): h for g, h in enumerate(r.gc.histograms)},
            ["generation"],
        )
        messages = CounterMetricFamily(
            "bft_peer_messages", "Frames to and from each peer", labels=["peer", "direction"]
        )
        volume = CounterMetricFamily(
            "bft_peer_bytes", "Bytes to and from each peer", labels=["peer", "direction"]
        )
        connected = GaugeMetricFamily(
            "bft_peer_connected", "1 when the link to the peer is up", labels=["peer"]
        )
        links = r.links.statistics() if r.links is not None else {}
        for peer, s in sorted(links.items()):
            messages.add_metric([str(peer), "sent"], s.get("frames_sent", 0))
            volume.add_metric([str(peer), "sent"], s.get("bytes_sent", 0))
            connected.add_metric([str(peer)], 1 if s.get("connected") else 0)
        for peer in sorted(r.peer_frames_in):
            messages.add_metric([str(peer), "received"], r.peer_frames_in[peer])
            volume.add_metric([str(peer), "received"], r.peer_bytes_in[peer])
        yield messages
        yield volume
        yield connected
        heights = GaugeMetricFamily(
            "bft_peer_ledger_height", "A peer's ledger height as it last said", labels=["peer"]
        )
        for peer, h in sorted(r.peer_heights.items()):
            heights.add_metric([str(peer)], h)
        yield heights
        spec = r.spec
        vouchers = spec.faults(r.committee.n) + 1 if spec.byzantine else 1
        yield gauge(
            "catchup_lag_blocks",
            "Highest peer height vouched for (by f+1 peers in BFT) minus this replica's",
            max(0, vouched_height(r.peer_heights.values(), vouchers) - height),
        )
        yield counter(
            "catchup_requests", "Block requests sent to peers", stats["block_requests_sent"]
        )
        rejected = CounterMetricFamily(
            "bft_rejected", "Remote input refused, by reason", labels=["reason"]
        )
        reasons = r.rejection_counts()
        top = sorted(reasons.items(), key=lambda kv: -kv[1])
        other = sum(n for _, n in top[MAX_REASON_LABELS:])
        for reason, n in top[:MAX_REASON_LABELS]:
            rejected.add_metric([reason], n)
        if other:
            rejected.add_metric(["other"], other)
        yield rejected
        yield gauge("client_sessions", "Connected clients", len(r.sessions))
        txs = CounterMetricFamily(
            "bft_client_transactions", "Client transactions by outcome", labels=["outcome"]
        )
        txs.add_metric(["received"], stats["client_txs_received"])
        txs.add_metric(["refused"], stats["client_txs_refused"])
        txs.add_metric(["malformed"], stats["client_txs_malformed"])
        txs.add_metric(["settled_again"], stats["client_txs_settled_again"])
        yield txs
        relayed = CounterMetricFamily(
            "bft_client_transactions_relayed",
            "Client requests handed to the leader (sent) or taken from others' relays (received)",
            labels=["direction"],
        )
        relayed.add_metric(["sent"], int(extra.get("relayed", 0)))
        relayed.add_metric(["received"], int(extra.get("relayed_in", 0)))
        yield relayed
        yield counter(
            "client_throttled",
            "Pauses in reading from a client connection over its refusal allowance",
            stats["client_throttled"],
        )
        yield counter(
            "client_rate_limited",
            "Pauses in reading from a client connection over its transaction or byte rate",
            stats["client_rate_limited"],
        )
        yield counter("evidence", "Equivocations seen and saved", stats["evidence"])
        yield counter(
            "evidence_dropped",
            "Equivocations not saved because the evidence store was full",
            r.evidence_store.dropped if r.evidence_store is not None else 0,
        )
        yield counter(
            "log_lines_suppressed",
            "Log lines dropped by the rate limiter",
            r.log_lines_suppressed(),
        )
        yield gauge("uptime_seconds", "Since the replica started", time.monotonic() - r.started)
        memory = GaugeMetricFamily(
            "bft_memory_bytes",
            "Resident set, and C malloc's bytes in use and kept free in its arenas",
            labels=["kind"],
        )
        figures = snapshot(r.malloc)
        blocks = figures.pop("python_blocks")
        for kind, value in figures.items():
            memory.add_metric([kind], value)
        yield memory
        yield gauge("python_blocks", "Objects held by Python's allocator", blocks)


def _histogram(
    family_type: Any, name: str, doc: str, series: dict[tuple[str, ...], Histogram], labels: list
) -> Any:
    family = family_type(name, doc, labels=labels)
    for values, h in series.items():
        family.add_metric(list(values), h.buckets(), sum_value=h.sum)
    return family


def registry_for(replica: Replica) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplicaCollector(replica))  # type: ignore[arg-type]
    return registry


async def serve_metrics(
    replica: Replica,
    host: str,
    port: int,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on ``host:port`` until cancelled; reports the bound port."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = registry_for(replica)
    slots = trio.Semaphore(MAX_SCRAPES)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            if slots.value == 0:
                await _respond(stream, 503, "text/plain", b"busy\n")
                return
            async with slots:
                request = b""
                with trio.move_on_after(REQUEST_TIMEOUT):
                    while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                        chunk = await stream.receive_some(MAX_REQUEST)
                        if not chunk:
                            break
                        request += chunk
                line = request.split(b"\r\n", 1)[0].split()
                if len(line) < 2 or b"\r\n\r\n" not in request:
                    await _respond(stream, 400, "text/plain", b"bad request\n")
                elif line[0] != b"GET":
                    await _respond(stream, 405, "text/plain", b"only GET\n")
                elif line[1].split(b"?")[0] == b"/metrics":
                    await _respond(stream, 200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif line[1] == b"/":
                    await _respond(stream, 200, "text/plain", b"metrics at /metrics\n")
                else:
                    await _respond(stream, 404, "text/plain", b"not found; try /metrics\n")

    async def guarded(stream: trio.SocketStream) -> None:
        # A scraper that goes away mid-answer is no error of ours.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await answer(stream)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(int(listeners[0].socket.getsockname()[1]))
    await trio.serve_listeners(guarded, listeners)


async def _respond(stream: trio.SocketStream, code: int, kind: str, body: bytes) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
        code, "Service Unavailable"
    )
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    await stream.send_all(head + body)

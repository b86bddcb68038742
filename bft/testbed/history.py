"""A client history and the Jepsen-style checks run on it against the committed ledger.

Theory of operation
-------------------
While a chaos run goes on, every client operation is recorded as an :class:`Op`: which loader
client sent it, its payload (unique in the run), when it was submitted and when it finished (in
seconds since the run began), and how: ``ok`` (a receipt that verified against the committee),
``refused`` (f+1 replicas said it will never commit), ``timeout`` (indeterminate: it may still
commit, never twice) or ``cancelled`` (still open when the run stopped: indeterminate as well).
Faults and other happenings go to an :class:`EventLog` on the same clock.

Once the cluster is healed and every ledger is identical, :func:`check_history` reads the ledger
and reports each :class:`Violation` of:

* **durability** (S3): every acknowledged operation is in the ledger exactly once, at the height
  and position its receipt named, byte for byte the transaction its receipt holds, in a block
  whose hash is the receipt's;
* **no duplicates**: no payload and no ``(client, seq)`` appears twice, whatever its outcome (a
  timed-out operation is indeterminate, never duplicated);
* **finality of refusals**: a refused operation is not in the ledger;
* **validity** (S4): every ledger transaction decodes, names a client of this run and carries a
  payload that client submitted (and, when the run signs, that client's valid signature);
* **per-client real-time order**: for one client, an operation acknowledged *before* another was
  submitted comes before it in the ledger. A client that waits for each acknowledgement before
  the next submission (window 1) therefore sees its whole history in sequence order. Operations
  in flight at the same time may be ordered either way: the service does not promise to keep
  the sequence order of concurrent requests (a retried request may commit after a later one),
  and the checker reports those inversions as a figure, not as a violation.

The checks are pure functions of the history and the blocks, so a test can feed them a doctored
history or ledger and see each violation reported (the negative controls).
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, TextIO

from crypto.codec import CodecError
from ledger import Block, Transaction

OK = "ok"
REFUSED = "refused"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
PENDING = "pending"

Place = tuple[int, int]
"""``(height, position)`` of a transaction in the ledger."""


@dataclass
class Op:
    """One client operation and how it ended."""

    client: str
    index: int
    payload: bytes
    submitted: float
    finished: float | None = None
    outcome: str = PENDING
    detail: str = ""
    client_id: bytes = b""
    seq: int | None = None
    place: Place | None = None
    block_hash: bytes | None = None
    raw: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "index": self.index,
            "payload": self.payload.decode("utf-8", "replace"),
            "submitted": round(self.submitted, 4),
            "finished": None if self.finished is None else round(self.finished, 4),
            "outcome": self.outcome,
            "detail": self.detail,
            "seq": self.seq,
            "place": list(self.place) if self.place else None,
        }


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    text: str

    def line(self) -> str:
        return f"{self.at:8.3f} s  {self.kind:<10} {self.text}"


class EventLog:
    """Timestamped events (faults, client outcomes, cluster snapshots) on the run's clock."""

    def __init__(self, started: float | None = None, sink: TextIO | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self.events: list[Event] = []
        self._sink = sink

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, kind: str, text: str) -> Event:
        event = Event(self.now(), kind, text)
        self.events.append(event)
        if self._sink is not None:
            self._sink.write(json.dumps({"at": round(event.at, 4), "kind": kind, "text": text}))
            self._sink.write("\n")
            self._sink.flush()
        return event

    def around(self, start: float, end: float | None = None, margin: float = 2.0) -> list[Event]:
        """The events from ``start - margin`` to ``end + margin``."""
        end = start if end is None else end
        times = [e.at for e in self.events]
        first = bisect_left(times, start - margin)
        return [e for e in self.events[first:] if e.at <= end + margin]


class History:
    """Every operation of a run, by client."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._by_payload: dict[bytes, Op] = {}
        self.client_ids: dict[bytes, str] = {}

    def add_client(self, name: str, client_id: bytes) -> None:
        self.client_ids[client_id] = name

    def begin(self, client: str, index: int, payload: bytes, at: float, client_id: bytes) -> Op:
        if payload in self._by_payload:
            raise ValueError(f"payload {payload[:40]!r} submitted twice in one history")
        op = Op(client=client, index=index, payload=payload, submitted=at, client_id=client_id)
        self.ops.append(op)
        self._by_payload[payload] = op
        return op

    def by_payload(self, payload: bytes) -> Op | None:
        return self._by_payload.get(payload)

    def counts(self) -> Counter[str]:
        return Counter(op.outcome for op in self.ops)

    def write(self, path: Path) -> None:
        with open(path, "w", encoding="utf-8") as out:
            for op in self.ops:
                out.write(json.dumps(op.to_json()) + "\n")


@dataclass(frozen=True)
class Violation:
    kind: str
    text: str
    at: float | None = None
    """When the operation concerned was submitted (for the events around it)."""
    until: float | None = None


@dataclass
class HistoryReport:
    violations: list[Violation] = field(default_factory=list)
    acknowledged: int = 0
    refused: int = 0
    indeterminate: int = 0
    indeterminate_committed: int = 0
    ledger_transactions: int = 0
    concurrent_inversions: int = 0
    """Pairs of a client's operations, in flight together, committed against sequence order
    (allowed; a figure, not a violation)."""
    ordered_pairs_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


def ledger_places(blocks: Iterable[Block]) -> Iterator[tuple[Place, bytes, bytes]]:
    """``((height, position), raw transaction, block hash)`` for every transaction, in order."""
    for block in blocks:
        block_hash = block.hash()
        for position, raw in enumerate(block.txs):
            yield (block.height, position), raw, block_hash


def check_history(
    history: History,
    blocks: Iterable[Block],
    *,
    chain_id: str,
    signed: bool = False,
    limit: int = 50,
) -> HistoryReport:
    """Check ``history`` against the committed ``blocks`` (see the module's docstring)."""
    report = HistoryReport()
    violations = report.violations

    def violate(kind: str, text: str, op: Op | None = None) -> None:
        if len(violations) < limit:
            at = op.submitted if op is not None else None
            until = op.finished if op is not None else None
            violations.append(Violation(kind, text, at, until))

    found: dict[bytes, list[tuple[Place, bytes, bytes]]] = defaultdict(list)
    requests: Counter[tuple[bytes, int]] = Counter()
    for place, raw, block_hash in ledger_places(blocks):
        report.ledger_transactions += 1
        try:
            tx = Transaction.decode(raw)
        except CodecError as exc:
            violate("validity", f"height {place[0]} position {place[1]}: undecodable: {exc}")
            continue
        requests[tx.request_id] += 1
        if requests[tx.request_id] == 2:
            violate(
                "duplicate",
                f"request (client {tx.client.hex()[:12]}, seq {tx.seq}) is in the ledger twice "
                f"(again at height {place[0]} position {place[1]})",
                history.by_payload(tx.payload),
            )
        op = history.by_payload(tx.payload)
        if op is None or tx.client not in history.client_ids:
            violate(
                "validity",
                f"height {place[0]} position {place[1]}: a transaction no client of this run "
                f"sent (client {tx.client.hex()[:12]}, payload {tx.payload[:32]!r})",
            )
            continue
        if op.client_id != tx.client:
            violate(
                "validity",
                f"height {place[0]} position {place[1]}: {op.client}'s payload under another "
                f"client id ({tx.client.hex()[:12]})",
                op,
            )
            continue
        if signed and not tx.verify_signature(chain_id):
            violate(
                "validity",
                f"height {place[0]} position {place[1]}: {op.client}'s transaction without its "
                "valid signature",
                op,
            )
        if op.seq is None:
            op.seq = tx.seq  # an indeterminate operation that committed: now we know its seq
        elif op.seq != tx.seq:
            violate(
                "validity",
                f"height {place[0]} position {place[1]}: {op.client} #{op.index} under seq "
                f"{tx.seq}, its receipt said {op.seq}",
                op,
            )
        found[tx.payload].append((place, raw, block_hash))

    for payload, where in found.items():
        if len(where) > 1:
            op = history.by_payload(payload)
            places = ", ".join(f"{h}/{p}" for (h, p), _, _ in where)
            violate(
                "duplicate",
                f"{op.client if op else '?'} #{op.index if op else '?'} is in the ledger "
                f"{len(where)} times (height/position {places})",
                op,
            )

    present: dict[str, list[tuple[Op, Place]]] = defaultdict(list)
    for op in history.ops:
        where = found.get(op.payload, [])
        if op.outcome == OK:
            report.acknowledged += 1
            if not where:
                violate(
                    "durability",
                    f"{op.client} #{op.index} (seq {op.seq}) was acknowledged at height "
                    f"{op.place[0] if op.place else '?'} but is not in the ledger",
                    op,
                )
                continue
            place, raw, block_hash = where[0]
            if op.place is not None and place != op.place:
                violate(
                    "durability",
                    f"{op.client} #{op.index} was acknowledged at height/position "
                    f"{op.place[0]}/{op.place[1]} but the ledger holds it at {place[0]}/{place[1]}",
                    op,
                )
            elif op.block_hash is not None and block_hash != op.block_hash:
                violate(
                    "durability",
                    f"{op.client} #{op.index}: the ledger's block at height {place[0]} is not the "
                    "block its receipt certified",
                    op,
                )
            elif op.raw is not None and raw != op.raw:
                violate(
                    "durability",
                    f"{op.client} #{op.index}: the ledger's bytes differ from the receipt's",
                    op,
                )
        elif op.outcome == REFUSED:
            report.refused += 1
            if where:
                violate(
                    "refusal",
                    f"{op.client} #{op.index} was refused ({op.detail}) yet committed at "
                    f"height {where[0][0][0]}",
                    op,
                )
        else:
            report.indeterminate += 1
            if where:
                report.indeterminate_committed += 1
        if where:
            present[op.client].append((op, where[0][0]))

    for ops in present.values():
        _check_client_order(ops, report, violate)
    return report


def _check_client_order(ops: list[tuple[Op, Place]], report: HistoryReport, violate: Any) -> None:
    """Real-time order for one client: whatever was acknowledged before ``b`` was submitted is
    before ``b`` in the ledger. One sweep over the submissions, in time order, with the latest
    ledger place among the acknowledgements seen so far."""
    acks = sorted(
        ((op.finished, place, op) for op, place in ops if op.outcome == OK and op.finished),
        key=lambda t: t[0],
    )
    by_submit = sorted(ops, key=lambda t: t[0].submitted)
    latest: tuple[Place, Op] | None = None
    i = 0
    for op, place in by_submit:
        while i < len(acks) and acks[i][0] < op.submitted:
            if latest is None or acks[i][1] > latest[0]:
                latest = (acks[i][1], acks[i][2])
            i += 1
        if latest is not None:
            report.ordered_pairs_checked += 1
            if latest[0] > place:
                earlier = latest[1]
                violate(
                    "order",
                    f"{op.client}: #{earlier.index} was acknowledged at {earlier.finished:.3f} s, "
                    f"before #{op.index} was submitted at {op.submitted:.3f} s, yet the ledger "
                    f"has #{op.index} first (height/position {place[0]}/{place[1]} before "
                    f"{latest[0][0]}/{latest[0][1]})",
                    op,
                )
    # Sequence-order inversions among concurrent operations: a figure only.
    by_seq = sorted(((op.seq, place) for op, place in ops if op.seq is not None))
    report.concurrent_inversions += sum(1 for (_, a), (_, b) in pairwise(by_seq) if a > b)

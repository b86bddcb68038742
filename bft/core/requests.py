"""Client requests: identity, deduplication, the pending pool, and batching.

A request is identified by ``(client, seq)``. Exactly-once rests on two rules every honest replica
applies identically, because both depend only on the committed ledger:

* :class:`ClientTable` remembers, per client, the highest committed sequence number and where each
  of the last ``window`` sequence numbers committed. A request already committed is answered with
  its place instead of being ordered again; one more than ``window`` below the client's highest
  committed sequence number is refused as stale (a client keeps at most ``window`` requests in
  flight, so such a request was either committed or abandoned).
* A block may not hold a request twice, nor one that is committed or pending in an earlier block
  of the same pipeline: a replica votes only for proposals that pass :meth:`ClientTable.status`.

The table keeps at most ``max_clients`` clients and ``max_entries`` remembered places in all,
evicting the client whose last commit is oldest (a deterministic choice, the same on every
replica). An evicted client's old requests look new again, so clients should not reuse an
identity across long idle periods; the limits are memory bounds (about 100 bytes an entry, and
a client keeps up to ``window + window // 4``), set them well above what active clients use.
A place is one int (the height shifted left past the widest position, or'd with the
position), so the table costs the garbage collector nothing however many entries it holds.

Because the table is a function of the whole committed ledger, a restarted replica must rebuild
it from the whole ledger, not from its last blocks: one that remembered only recent blocks would
take an old transaction, replayed, for a new one. :meth:`ClientTable.snapshot` and
:meth:`ClientTable.from_snapshot` let a runtime keep the table on disk at a ledger height and
replay only the blocks above it; the snapshot keeps the eviction order, so the restored table
evicts exactly as the one that never stopped.
"""

from __future__ import annotations

import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

from crypto.codec import CodecError, decode_value, encode_value
from crypto.hashing import DIGEST_SIZE, sha256
from ledger import MAX_BLOCK_TXS, Block, Transaction
from ledger.tx import parse_transaction

RequestId = tuple[bytes, int]


class Request(NamedTuple):
    """A client transaction in its encoded form, with its identity decoded once.

    A named tuple, not a frozen dataclass: every replica makes one per transaction, and a tuple
    is built in 0.3 us where a frozen dataclass's ``__init__`` takes 0.7 us (CPython 3.11).
    ``id`` is ``(client, seq)``, made once: the pool, the pipeline and the client table ask for
    it several times per transaction. Build one with :meth:`of`.
    """

    raw: bytes
    client: bytes
    seq: int
    signed: bool
    id: RequestId

    @classmethod
    def of(cls, raw: bytes, client: bytes, seq: int, signed: bool) -> Request:
        return cls(raw, client, seq, signed, (client, seq))

    @classmethod
    def from_tx(cls, tx: Transaction) -> Request:
        return cls.of(tx.encode(), tx.client, tx.seq, tx.is_signed)

    @classmethod
    def from_raw(cls, raw: bytes) -> Request:
        """Decode an encoded transaction; raises :class:`CodecError` if it is not one."""
        # Once per transaction on every replica: the canonical form is parsed in place (half the
        # cost of building a Transaction first); the strict decoder says what is wrong.
        parsed = parse_transaction(raw)
        if parsed is None:
            tx = Transaction.decode(raw)
            return cls.of(raw, tx.client, tx.seq, tx.is_signed)
        client, seq, _payload, signature = parsed
        return cls(raw, client, seq, bool(signature), (client, seq))

    @property
    def size(self) -> int:
        return len(self.raw)


def requests_of(block: Block) -> list[Request]:
    """The requests of a committed block (its transactions are valid encodings)."""
    out = []
    for raw in block.txs:
        try:
            out.append(Request.from_raw(raw))
        except CodecError:
            continue  # cannot happen for blocks that passed validation; ignore defensively
    return out


class Status(Enum):
    NEW = "new"
    COMMITTED = "committed"
    STALE = "stale"


# Reading a member through its class (``Status.NEW``) costs ~0.35 us on CPython 3.11, a module
# global ~20 ns; every replica asks for the status of every transaction several times.
_NEW, _COMMITTED, _STALE = Status.NEW, Status.COMMITTED, Status.STALE


_POSITION_BITS = MAX_BLOCK_TXS.bit_length()
_POSITION_MASK = (1 << _POSITION_BITS) - 1
SNAPSHOT_VERSION = 1


def _packed(numbers: array[int]) -> bytes:
    if sys.byteorder != "little":
        numbers.byteswap()
    return numbers.tobytes()


def _unpacked(data: bytes) -> list[int]:
    if len(data) % 8:
        raise CodecError("a packed array whose length is not a multiple of 8 bytes")
    numbers = array("Q")
    numbers.frombytes(data)
    if sys.byteorder != "little":
        numbers.byteswap()
    return numbers.tolist()


class _Client:
    __slots__ = ("committed", "max_seq")

    def __init__(self) -> None:
        self.max_seq = -1
        self.committed: dict[int, int] = {}  # seq -> height << _POSITION_BITS | position


class ClientTable:
    """Per-client committed sequence numbers: a deterministic function of the ledger."""

    __slots__ = (
        "_clients",
        "_entries",
        "evicted",
        "height",
        "max_clients",
        "max_entries",
        "window",
    )

    def __init__(
        self, window: int = 1024, max_clients: int = 100_000, max_entries: int = 1_000_000
    ) -> None:
        if window < 1 or max_clients < 1 or max_entries < 1:
            raise ValueError("window, max_clients and max_entries must be positive")
        self.window = window
        self.max_clients = max_clients
        self.max_entries = max_entries
        self._clients: OrderedDict[bytes, _Client] = OrderedDict()
        self._entries = 0
        self.height = 0
        """The highest height a request was recorded at."""
        self.evicted = 0
        """Clients forgotten to keep the limits since this table was made (a replay at start
        included); a restored snapshot starts from 0."""

    @classmethod
    def for_config(cls, config: Any) -> ClientTable:
        """An empty table with a protocol config's ``client_window``, ``max_clients`` and
        ``max_client_entries``."""
        return cls(config.client_window, config.max_clients, config.max_client_entries)

    def status(self, client: bytes, seq: int) -> tuple[Status, tuple[int, int] | None]:
        """Whether ``(client, seq)`` is new, committed (with its height and position), or stale."""
        state = self._clients.get(client)
        if state is None:
            return _NEW, None
        where = state.committed.get(seq)
        if where is not None:
            return _COMMITTED, (where >> _POSITION_BITS, where & _POSITION_MASK)
        if seq <= state.max_seq - self.window:
            return _STALE, None
        return _NEW, None

    def is_new(self, client: bytes, seq: int) -> bool:
        """``status(client, seq)`` is ``Status.NEW`` (neither committed nor stale)."""
        state = self._clients.get(client)
        return state is None or (seq not in state.committed and seq > state.max_seq - self.window)

    def record(self, request: Request, height: int, position: int) -> None:
        if not 0 <= position <= _POSITION_MASK:
            raise ValueError(f"position {position} exceeds a block's {MAX_BLOCK_TXS} transactions")
        state = self._clients.get(request.client)
        if state is None:
            state = self._clients[request.client] = _Client()
        else:
            self._clients.move_to_end(request.client)
        committed = state.committed
        size = len(committed)
        committed[request.seq] = height << _POSITION_BITS | position
        if height > self.height:
            self.height = height
        if request.seq > state.max_seq:
            state.max_seq = request.seq
        self._entries += len(committed) - size
        if len(committed) > self.window + self.window // 4:
            self._trim(state)
        if len(self._clients) > self.max_clients or self._entries > self.max_entries:
            self._evict()

    def _trim(self, state: _Client) -> dict[int, int]:
        """Forget a client's places a window below its highest (answered "stale" whatever they
        hold); its new places."""
        floor = state.max_seq - self.window
        before = len(state.committed)
        committed = state.committed = {s: w for s, w in state.committed.items() if s > floor}
        self._entries += len(committed) - before
        return committed

    def _evict(self) -> None:
        """Forget the clients least recently recorded until the table is within its limits
        (never the last one, the newest: it was just recorded)."""
        clients = self._clients
        while len(clients) > 1 and (
            len(clients) > self.max_clients or self._entries > self.max_entries
        ):
            _, evicted = clients.popitem(last=False)
            self._entries -= len(evicted.committed)
            self.evicted += 1

    def record_new(
        self, positioned: Iterable[tuple[int, Request]], height: int
    ) -> list[tuple[int, Request]]:
        """Record, in order, each ``(position, request)`` of block ``height`` that is new when
        its turn comes (a repeat of an earlier one is not), and return those: the same table
        and answer as ``is_new`` then ``record`` for each, with the client looked up once per
        run of its requests rather than once per request (a block's transactions come in runs
        of one client's), and moved to the end of the eviction order once per run."""
        clients = self._clients
        window = self.window
        trim_above = window + window // 4
        recorded: list[tuple[int, Request]] = []
        client: bytes | None = None
        state: _Client | None = None
        committed: dict[int, int] = {}
        newest = False  # whether ``client`` is already last in the eviction order
        for position, request in positioned:
            if not 0 <= position <= _POSITION_MASK:
                raise ValueError(
                    f"position {position} exceeds a block's {MAX_BLOCK_TXS} transactions"
                )
            if request.client != client:
                client = request.client
                state = clients.get(client)
                committed = state.committed if state is not None else {}
                newest = False
            seq = request.seq
            if state is None:
                state = clients[client] = _Client()
                committed = state.committed
                newest = True
            elif seq in committed or seq <= state.max_seq - window:
                continue
            elif not newest:
                clients.move_to_end(client)
                newest = True
            committed[seq] = height << _POSITION_BITS | position
            self._entries += 1
            if height > self.height:
                self.height = height
            if seq > state.max_seq:
                state.max_seq = seq
            if len(committed) > trim_above:
                committed = self._trim(state)
            recorded.append((position, request))
            if len(clients) > self.max_clients or self._entries > self.max_entries:
                self._evict()
        return recorded

    @property
    def entries(self) -> int:
        """Places remembered, over all clients (bounded by ``max_entries``)."""
        return self._entries

    def record_block(self, block: Block, requests: Sequence[Request] | None = None) -> None:
        if requests is None:
            requests = requests_of(block)
        for position, request in enumerate(requests):
            self.record(request, block.height, position)

    def rebuild(self, blocks: Iterable[Block]) -> None:
        for block in blocks:
            self.record_block(block)

    def __len__(self) -> int:
        return len(self._clients)

    def same_limits(self, other: ClientTable) -> bool:
        return (self.window, self.max_clients, self.max_entries) == (
            other.window,
            other.max_clients,
            other.max_entries,
        )

    # -- on disk

    def snapshot(self, height: int) -> bytes:
        """The table as of ledger height ``height`` (every block up to it recorded, none above),
        as bytes for :meth:`from_snapshot`: a SHA-256 of the body, then the body, canonical CBOR
        ``[version, height, window, max_clients, max_entries, ids, max_seqs, counts, seqs,
        places]``: the client ids in eviction order, then per client its highest sequence
        number and how many places it has, then all places' sequence numbers and places, the
        last four as little-endian unsigned 64-bit arrays."""
        if height < self.height:
            raise ValueError(f"the table holds height {self.height}, above {height}")
        ids: list[bytes] = []
        max_seqs, counts, seqs, places = (array("Q") for _ in range(4))
        for client, state in self._clients.items():
            ids.append(client)
            max_seqs.append(state.max_seq)
            counts.append(len(state.committed))
            seqs.extend(state.committed.keys())
            places.extend(state.committed.values())
        body = encode_value(
            [SNAPSHOT_VERSION, height, self.window, self.max_clients, self.max_entries, ids]
            + [_packed(a) for a in (max_seqs, counts, seqs, places)]
        )
        return sha256(body) + body

    @classmethod
    def from_snapshot(
        cls, data: bytes, window: int, max_clients: int, max_entries: int
    ) -> tuple[ClientTable, int]:
        """The table a :meth:`snapshot` holds, and its ledger height; raises
        :class:`CodecError` saying what is wrong when the bytes are damaged, inconsistent, or
        made with other limits (a table evicts by its limits, so another table's order would
        not be this one's)."""
        if len(data) < DIGEST_SIZE or sha256(data[DIGEST_SIZE:]) != data[:DIGEST_SIZE]:
            raise CodecError("checksum mismatch: the snapshot is damaged")
        value = decode_value(data[DIGEST_SIZE:], max_size=len(data))
        if type(value) is not list or len(value) != 10:
            raise CodecError("not a client table snapshot")
        version, height, *limits = value[:5]
        ids = value[5]
        if version != SNAPSHOT_VERSION:
            raise CodecError(f"unsupported snapshot version {version!r}")
        if limits != [window, max_clients, max_entries]:
            raise CodecError(
                f"made with window, max_clients, max_entries = {limits}, "
                f"not {[window, max_clients, max_entries]}"
            )
        if type(height) is not int or height < 0:
            raise CodecError(f"bad height {height!r}")
        if type(ids) is not list or not all(type(b) is bytes for b in value[6:]):
            raise CodecError("malformed snapshot body")
        max_seqs, counts, seqs, places = (_unpacked(b) for b in value[6:])
        if not len(ids) == len(max_seqs) == len(counts) or len(seqs) != len(places):
            raise CodecError("the per-client lists differ in length")
        if len(ids) > max_clients or len(seqs) > max_entries:
            raise CodecError(f"{len(ids)} clients and {len(seqs)} places exceed the limits")
        table = cls(window, max_clients, max_entries)
        low, top = 1 << _POSITION_BITS, (height + 1) << _POSITION_BITS
        most = window + window // 4
        at = 0
        for client, max_seq, count in zip(ids, max_seqs, counts, strict=True):
            if type(client) is not bytes or not 1 <= len(client) <= 32:
                raise CodecError(f"bad client id {client!r:.80}")
            if client in table._clients:
                raise CodecError(f"client {client.hex()} listed twice")
            if not 1 <= count <= most:
                raise CodecError(f"client {client.hex()}: bad place count {count}")
            if at + count > len(seqs):
                raise CodecError("place counts do not add up to the places listed")
            state = _Client()
            state.committed = committed = dict(
                zip(seqs[at : at + count], places[at : at + count], strict=True)
            )
            at += count
            if len(committed) != count:
                raise CodecError(f"client {client.hex()}: a sequence number listed twice")
            if not low <= min(committed.values()) <= max(committed.values()) < top:
                raise CodecError(f"client {client.hex()}: a place out of range")
            if max_seq < max(committed):
                raise CodecError(f"client {client.hex()}: bad highest sequence number")
            state.max_seq = max_seq
            table._clients[client] = state
            table._entries += count
            table.height = max(table.height, max(committed.values()) >> _POSITION_BITS)
        if at != len(seqs):
            raise CodecError("place counts do not add up to the places listed")
        return table, height


class Mempool:
    """Requests waiting to be ordered, bounded in count, bytes and per client.

    A request is either *waiting* (in arrival order, not yet in any proposal) or *held* (in a
    proposal that has not committed). ``take`` moves requests from waiting to held for a new
    proposal; ``hold`` does the same when a replica accepts someone else's proposal; ``release``
    puts every held request back in front of the waiting ones (a view change: what a failed
    leader did not get committed is proposed again); ``remove`` forgets committed requests.
    All of these cost in proportion to the requests they touch, not to the pool's size.
    """

    __slots__ = (
        "_by_raw",
        "_bytes",
        "_held",
        "_per_client",
        "_waiting",
        "_waiting_bytes",
        "max_bytes",
        "max_per_client",
        "max_requests",
    )

    def __init__(
        self, max_requests: int = 100_000, max_bytes: int = 256 << 20, max_per_client: int = 10_000
    ) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_per_client = max_per_client
        self._waiting: dict[RequestId, tuple[Request, int]] = {}
        self._held: dict[RequestId, tuple[Request, int]] = {}
        self._per_client: dict[bytes, int] = {}
        self._by_raw: dict[bytes, Request] = {}
        self._bytes = 0
        self._waiting_bytes = 0

    def lookup(self, raw: bytes) -> Request | None:
        """The pending request whose encoding is exactly ``raw`` (decoded once, at admission)."""
        return self._by_raw.get(raw)

    def add(self, request: Request, tick: int = 0) -> str:
        """Queue ``request``; returns ``""`` or why it was not queued."""
        rid = request.id
        if rid in self._waiting or rid in self._held:
            return "already pending"
        size = len(request.raw)
        if len(self) >= self.max_requests or self._bytes + size > self.max_bytes:
            return "mempool full"
        count = self._per_client.get(request.client, 0)
        if count >= self.max_per_client:
            return "too many pending requests from this client"
        self._waiting[rid] = (request, tick)
        self._by_raw[request.raw] = request
        self._per_client[request.client] = count + 1
        self._bytes += size
        self._waiting_bytes += size
        return ""

    def take(self, max_count: int, max_bytes: int) -> list[Request]:
        """Up to ``max_count`` waiting requests (and ``max_bytes``), oldest first, now held."""
        out: list[Request] = []
        size = 0
        for request, _ in self._waiting.values():
            length = len(request.raw)
            if out and size + length > max_bytes:
                break
            out.append(request)
            size += length
            if len(out) >= max_count:
                break
        held, waiting = self._held, self._waiting
        for request in out:
            rid = request.id
            held[rid] = waiting.pop(rid)
        self._waiting_bytes -= size
        return out

    def hold(self, ids: Iterable[RequestId]) -> None:
        for rid in ids:
            entry = self._waiting.pop(rid, None)
            if entry is not None:
                self._held[rid] = entry
                self._waiting_bytes -= entry[0].size

    def release(self, now: int | None = None) -> None:
        """Every held request waits again, ahead of the others (restamped to ``now`` if given)."""
        if now is None:
            merged = {**self._held, **self._waiting}
        else:
            merged = {rid: (r, now) for rid, (r, _) in self._held.items()}
            merged.update((rid, (r, now)) for rid, (r, _) in self._waiting.items())
        self._waiting = merged
        self._held = {}
        self._waiting_bytes = self._bytes

    def remove(self, ids: Iterable[RequestId]) -> None:
        for rid in ids:
            entry = self._waiting.pop(rid, None)
            if entry is not None:
                self._waiting_bytes -= entry[0].size
            else:
                entry = self._held.pop(rid, None)
                if entry is None:
                    continue
            request = entry[0]
            self._by_raw.pop(request.raw, None)
            self._bytes -= len(request.raw)
            left = self._per_client[request.client] - 1
            if left:
                self._per_client[request.client] = left
            else:
                del self._per_client[request.client]

    def __contains__(self, rid: RequestId) -> bool:
        return rid in self._waiting or rid in self._held

    def __len__(self) -> int:
        return len(self._waiting) + len(self._held)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def waiting_bytes(self) -> int:
        """Bytes of the waiting requests (kept as they come and go: read on every proposal)."""
        return self._waiting_bytes

    @property
    def bytes(self) -> int:
        return self._bytes

    def oldest_tick(self, *, include_held: bool = False) -> int | None:
        """Arrival tick of the oldest waiting (or, with ``include_held``, any) request."""
        oldest = None
        for entries in (self._waiting, self._held) if include_held else (self._waiting,):
            for _, tick in entries.values():
                oldest = tick if oldest is None else min(oldest, tick)
                break
        return oldest

    def waiting_between(self, after: int, upto: int, limit: int) -> list[Request]:
        """Waiting requests that arrived after tick ``after`` and by tick ``upto``, oldest first;
        at most ``limit``, found among the ``limit`` oldest. Arrival ticks must not decrease along
        the waiting order: ``add`` is given the present tick, ``release`` is given it too."""
        out: list[Request] = []
        for looked, (request, tick) in enumerate(self._waiting.values()):
            if tick > upto or looked >= limit:
                break
            if tick > after:
                out.append(request)
        return out

    def requests(self) -> Iterator[Request]:
        """Held then waiting requests, oldest first, without copying the pool (stop early)."""
        for request, _ in self._held.values():
            yield request
        for request, _ in self._waiting.values():
            yield request


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a leader cuts a batch: at ``max_txs`` or ``max_bytes``, or once the oldest waiting
    request has lingered ``linger_ticks`` ticks (0: as soon as anything is waiting).

    Adaptive batching: a batch that is not full is cut only while fewer than
    ``partial_in_flight`` batches are ordered but not yet executed; full batches pipeline up to
    the protocol's own limit. With nothing in flight (light load) a request leaves at once; under
    moderate load requests gather behind the block in flight instead of each going out in a block
    of its own, and every block has a large fixed cost (signatures, messages, a ledger append).
    0 turns the wait off (cut whenever something is waiting).
    """

    max_txs: int = 500
    max_bytes: int = 1 << 20
    linger_ticks: int = 0
    partial_in_flight: int = 1

    def due(
        self,
        waiting: int,
        waiting_bytes: int,
        oldest_tick: int | None,
        now: int,
        in_flight: int = 0,
    ) -> bool:
        """Whether to cut a batch now from the ``waiting`` requests (all of them, and all their
        bytes: a batch that the byte limit cuts short is as full as one at ``max_txs``), with
        ``in_flight`` batches ordered and not executed."""
        if waiting == 0 or oldest_tick is None:
            return False
        if waiting >= self.max_txs or waiting_bytes >= self.max_bytes:
            return True
        if self.partial_in_flight and in_flight >= self.partial_in_flight:
            return False
        return now - oldest_tick >= self.linger_ticks

"""Request identity, deduplication, the mempool and batching."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bft.core.requests import BatchPolicy, ClientTable, Mempool, Request, Status
from crypto.codec import CodecError
from ledger import Transaction
from tests.strategies import transactions


def req(client: int, seq: int, size: int = 10) -> Request:
    return Request.from_tx(
        Transaction(client=b"c%d" % client, seq=seq, payload=b"x" * size, signature=b"")
    )


def test_request_identity_is_client_and_sequence() -> None:
    a, b = req(1, 5), req(1, 5, size=20)
    assert a.id == b.id == (b"c1", 5)
    assert Request.from_raw(a.raw) == a


def test_client_table_reports_committed_places_and_stale_requests() -> None:
    table = ClientTable(window=4)
    assert table.status(b"c1", 1) == (Status.NEW, None)
    for seq in (1, 2, 3, 8):
        table.record(req(1, seq), height=seq, position=0)
    assert table.status(b"c1", 2) == (Status.COMMITTED, (2, 0))
    assert table.status(b"c1", 5)[0] is Status.NEW  # within the window: could still commit
    assert table.status(b"c1", 4)[0] is Status.STALE  # 8 - 4: the client moved on
    assert table.status(b"c2", 4)[0] is Status.NEW


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 40), max_size=30),
    st.integers(1, 8),
    st.integers(1, 50),
)
def test_is_new_says_what_status_says(committed: list[int], window: int, seq: int) -> None:
    """``is_new``, the per-transaction shortcut, agrees with ``status`` for new, committed
    (also below the window) and stale requests, and for a client never seen."""
    table = ClientTable(window=window)
    for s in committed:
        table.record(req(1, s), height=s, position=0)
    assert table.is_new(b"c1", seq) == (table.status(b"c1", seq)[0] is Status.NEW)
    assert table.is_new(b"c2", seq) and table.status(b"c2", seq)[0] is Status.NEW


def test_client_table_memory_is_bounded() -> None:
    table = ClientTable(window=8, max_clients=3)
    for seq in range(1, 200):
        table.record(req(1, seq), seq, 0)
    assert len(table._clients[b"c1"].committed) <= 8 + 8 // 4
    for client in range(2, 6):
        table.record(req(client, 1), 1, 0)
    assert len(table) == 3 and table.evicted == 2
    assert table.status(b"c1", 199)[0] is Status.NEW  # evicted: the oldest to commit


def test_client_table_bounds_entries_over_all_clients() -> None:
    """``max_entries`` bounds the places remembered in all; the clients whose last commit is
    oldest go first. Places are ints: nothing for the garbage collector to walk."""
    import gc

    table = ClientTable(window=8, max_clients=100, max_entries=20)
    for client in (1, 2, 3):
        for seq in range(1, 9):
            table.record(req(client, seq), 100 * client + seq, seq)
        assert table.entries == sum(len(c.committed) for c in table._clients.values())
    assert table.entries <= 20 and list(table._clients) == [b"c2", b"c3"]
    assert table.status(b"c1", 3) == (Status.NEW, None)  # evicted
    assert table.status(b"c3", 3) == (Status.COMMITTED, (303, 3))
    assert not gc.is_tracked(table._clients[b"c3"].committed)
    for seq in range(9, 60):  # pruning keeps the count in step
        table.record(req(3, seq), seq, 0)
        assert table.entries == sum(len(c.committed) for c in table._clients.values()) <= 20
    assert table.status(b"c3", 59) == (Status.COMMITTED, (59, 0))
    assert table.status(b"c3", 51)[0] is Status.STALE  # a window below the highest
    assert table.status(b"c3", 52) == (Status.COMMITTED, (52, 0))


def test_client_table_eviction_is_deterministic() -> None:
    def build() -> list[bytes]:
        table = ClientTable(window=8, max_clients=2)
        for height, client in enumerate([1, 2, 1, 3, 2, 4], start=1):
            table.record(req(client, height), height, 0)
        return list(table._clients)

    assert build() == build() == [b"c2", b"c4"]


def state_of(table: ClientTable) -> list[tuple[bytes, int, dict[int, int]]]:
    """Everything that decides the table's answers and evictions, in eviction order."""
    return [(c, s.max_seq, dict(s.committed)) for c, s in table._clients.items()]


def busy_table(seed: int = 7) -> ClientTable:
    import random

    rng = random.Random(seed)
    table = ClientTable(window=8, max_clients=20, max_entries=120)
    seqs: dict[int, int] = {}
    for height in range(1, 300):
        client = rng.randrange(30)
        seqs[client] = seqs.get(client, 0) + rng.randrange(1, 4)
        table.record(req(client, seqs[client]), height, rng.randrange(50))
    return table


def test_client_table_snapshot_restores_answers_order_and_height() -> None:
    """A restored table is the same table: same places, same stale floors, and the same clients
    evicted next (the order is kept), so a restarted replica keeps deciding as its peers do."""
    table = busy_table()
    data = table.snapshot(299)
    restored, height = ClientTable.from_snapshot(data, 8, 20, 120)
    assert height == 299 and restored.height == table.height == 299
    assert state_of(restored) == state_of(table) and restored.entries == table.entries
    for client in range(30):
        for seq in range(0, 40):
            cid = b"c%d" % client
            assert restored.status(cid, seq) == table.status(cid, seq)
    for height in range(300, 340):  # both evict the same clients from here on
        for t in (table, restored):
            t.record(req(100 + height, 1), height, 0)
        assert state_of(restored) == state_of(table)
    empty = ClientTable(window=8)
    assert ClientTable.from_snapshot(empty.snapshot(0), 8, 100_000, 1_000_000)[0].height == 0


def test_client_table_snapshot_is_refused_when_damaged_or_made_with_other_limits() -> None:
    from crypto.codec import CodecError, encode_value
    from crypto.hashing import sha256

    table = busy_table()
    with pytest.raises(ValueError, match="above"):
        table.snapshot(10)  # the table holds later blocks than that
    data = table.snapshot(299)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    for bad, reason in [
        (bytes(flipped), "checksum"),
        (data[:-3], "checksum"),
        (b"", "checksum"),
    ]:
        with pytest.raises(CodecError, match=reason):
            ClientTable.from_snapshot(bad, 8, 20, 120)
    with pytest.raises(CodecError, match="made with window"):
        ClientTable.from_snapshot(data, 16, 20, 120)

    def forged(body: list[object]) -> bytes:
        """A snapshot with a good checksum over ``body`` (lists of ints packed as arrays)."""
        packed = [
            b"".join(x.to_bytes(8, "little", signed=x < 0) for x in v) if type(v) is list else v
            for v in body[6:]
        ]
        raw = encode_value(body[:6] + packed)
        return sha256(raw) + raw

    good = [1, 5, 8, 20, 120, [b"a"], [3], [2], [2, 3], [5 << 17, 5 << 17 | 1]]
    restored, _ = ClientTable.from_snapshot(forged(good), 8, 20, 120)
    assert restored.status(b"a", 3) == (Status.COMMITTED, (5, 1))
    for change, reason in [
        ({0: 2}, "version"),
        ({6: [1]}, "highest sequence number"),
        ({7: [11]}, "bad place count"),  # at most window + window // 4
        ({7: [3]}, "do not add up"),
        ({7: [1]}, "do not add up"),
        ({8: [2, 2]}, "listed twice"),
        ({9: [5 << 17, 9 << 17]}, "out of range"),  # above the snapshot's height
        ({9: [5 << 17, 1]}, "out of range"),  # height 0
        ({5: [b"a", b"b"]}, "differ in length"),
        ({5: [b""]}, "bad client id"),
        ({5: [b"x" * 33]}, "bad client id"),
        ({8: b"\x00" * 12}, "multiple of 8"),
        ({5: "a"}, "malformed"),
        ({4: 121}, "made with"),
    ]:
        body = list(good)
        for index, value in change.items():
            body[index] = value
        with pytest.raises(CodecError, match=reason):
            ClientTable.from_snapshot(forged(body), 8, 20, 120)


def test_mempool_bounds_and_reasons() -> None:
    pool = Mempool(max_requests=3, max_bytes=10_000, max_per_client=2)
    assert pool.add(req(1, 1)) == ""
    assert pool.add(req(1, 1)) == "already pending"
    assert pool.add(req(1, 2)) == ""
    assert pool.add(req(1, 3)) == "too many pending requests from this client"
    assert pool.add(req(2, 1)) == ""
    assert pool.add(req(3, 1)) == "mempool full"
    small = Mempool(max_bytes=50)
    assert small.add(req(1, 1, size=10)) == ""
    assert small.add(req(1, 2, size=30)) == "mempool full"


def test_mempool_take_hold_release_remove() -> None:
    pool = Mempool()
    for seq in range(1, 6):
        pool.add(req(1, seq), tick=seq)
    taken = pool.take(2, 1 << 20)
    assert [r.seq for r in taken] == [1, 2]
    assert pool.waiting == 3 and len(pool) == 5
    pool.hold([(b"c1", 4)])
    assert [r.seq for r in pool.take(10, 1 << 20)] == [3, 5]
    pool.remove([(b"c1", 1), (b"c1", 4)])
    pool.release(now=100)
    assert [r.seq for r in pool.take(10, 1 << 20)] == [2, 3, 5]
    assert pool.oldest_tick(include_held=True) == 100
    pool.remove([(b"c1", s) for s in (2, 3, 5)])
    assert len(pool) == 0 and pool.bytes == 0 and pool.oldest_tick() is None


def test_waiting_between_finds_the_aged_waiting_requests_looking_at_a_bounded_few() -> None:
    pool = Mempool()
    for seq in range(1, 9):
        pool.add(req(1, seq), tick=seq)
    pool.hold([(b"c1", 3)])  # in a proposal: not waiting
    assert [r.seq for r in pool.waiting_between(1, 5, 100)] == [2, 4, 5]
    assert [r.seq for r in pool.waiting_between(-1, 100, 100)] == [1, 2, 4, 5, 6, 7, 8]
    assert pool.waiting_between(5, 5, 100) == []
    assert [r.seq for r in pool.waiting_between(2, 100, 4)] == [4, 5]  # looked at 1, 2, 4, 5


def test_take_respects_the_byte_limit_but_always_makes_progress() -> None:
    pool = Mempool()
    for seq in range(1, 4):
        pool.add(req(1, seq, size=100))
    assert len(pool.take(10, 50)) == 1  # one request even if it alone is larger
    assert (pool.waiting, pool.waiting_bytes) == (2, 2 * req(1, 2, size=100).size)


def test_waiting_bytes_follow_every_move() -> None:
    """The bytes of the waiting requests are kept as requests are added, taken, held, released
    and removed; proposals read them instead of walking the pool."""
    pool = Mempool()

    def check() -> None:
        waiting = list(pool.requests())[len(pool) - pool.waiting :]  # held first, then waiting
        assert pool.waiting_bytes == sum(r.size for r in waiting)

    for seq in range(1, 9):
        pool.add(req(1, seq, size=10 * seq))
        check()
    pool.take(3, 1 << 20)
    check()
    pool.hold([(b"c1", 5), (b"c1", 6)])
    check()
    pool.remove([(b"c1", 1), (b"c1", 7)])  # one held, one waiting
    check()
    pool.release()
    check()
    assert pool.waiting_bytes == pool.bytes
    pool.remove([(b"c1", seq) for seq in range(1, 9)])
    assert (pool.waiting, pool.waiting_bytes, pool.bytes) == (0, 0, 0)


@pytest.mark.parametrize(
    "waiting,size,oldest,now,due",
    [
        (0, 0, None, 5, False),
        (3, 30, 0, 0, False),
        (3, 30, 0, 4, True),
        (10, 30, 9, 9, True),
        (1, 1 << 20, 9, 9, True),
    ],
)
def test_batch_policy(waiting: int, size: int, oldest: int | None, now: int, due: bool) -> None:
    policy = BatchPolicy(max_txs=10, max_bytes=1 << 20, linger_ticks=4)
    assert policy.due(waiting, size, oldest, now) is due


@pytest.mark.parametrize(
    ("waiting", "in_flight", "partial_in_flight", "due"),
    [
        (1, 0, 1, True),  # light load: out at once
        (1, 1, 1, False),  # a partial batch waits behind the one in flight
        (10, 5, 1, True),  # a full batch does not
        (3, 1, 2, True),  # room for a second partial batch
        (3, 4, 0, True),  # 0: no waiting
    ],
)
def test_adaptive_batching(waiting: int, in_flight: int, partial_in_flight: int, due: bool) -> None:
    policy = BatchPolicy(max_txs=10, partial_in_flight=partial_in_flight)
    assert policy.due(waiting, 100 * waiting, 0, 0, in_flight) is due


@settings(max_examples=300, deadline=None)
@given(transactions(), st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_a_request_decodes_as_its_transaction_or_not_at_all(
    tx: Transaction, where: int, bit: int
) -> None:
    """``Request.from_raw`` (every replica, every transaction) parses the canonical form in
    place: the same identity as the strict decoder's, and a CodecError exactly where it fails."""
    raw = tx.encode()
    request = Request.from_raw(raw)
    assert (request.raw, request.client, request.seq, request.signed) == (
        raw,
        tx.client,
        tx.seq,
        tx.is_signed,
    )
    spoiled = bytearray(raw)
    spoiled[where % len(raw)] ^= 1 << bit
    try:
        strict = Transaction.decode(bytes(spoiled))
    except CodecError:
        with pytest.raises(CodecError):
            Request.from_raw(bytes(spoiled))
    else:
        again = Request.from_raw(bytes(spoiled))
        assert (again.client, again.seq, again.signed) == (
            strict.client,
            strict.seq,
            strict.is_signed,
        )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(1, 4), st.integers(1, 30)), max_size=12),
        max_size=8,
    ),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(1, 20),
)
def test_record_new_is_is_new_then_record(
    blocks: list[list[tuple[int, int]]], window: int, max_clients: int, max_entries: int
) -> None:
    """A block's requests recorded at once (``record_new``, clients looked up per run) leave
    the table - places, stale floors, eviction order and counts - as recording them one by one
    after ``is_new`` does, and return the same requests, repeats within a block included."""
    batched = ClientTable(window=window, max_clients=max_clients, max_entries=max_entries)
    single = ClientTable(window=window, max_clients=max_clients, max_entries=max_entries)
    for height, ids in enumerate(blocks, start=1):
        positioned = [(position, req(c, s)) for position, (c, s) in enumerate(ids)]
        expected = []
        for position, request in positioned:
            if single.is_new(request.client, request.seq):
                single.record(request, height, position)
                expected.append((position, request))
        assert batched.record_new(positioned, height) == expected
        assert batched.snapshot(len(blocks)) == single.snapshot(len(blocks))
        assert (batched.entries, batched.evicted, batched.height, len(batched)) == (
            single.entries, single.evicted, single.height, len(single),
        )  # fmt: skip
        for client in range(1, 6):
            for seq in range(0, 32):
                key = (b"c%d" % client, seq)
                assert batched.status(*key) == single.status(*key)

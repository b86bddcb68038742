"""Request identity, deduplication, the mempool and batching."""

from __future__ import annotations

import pytest

from bft.core.requests import BatchPolicy, ClientTable, Mempool, Request, Status
from ledger import Transaction


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


def test_client_table_memory_is_bounded() -> None:
    table = ClientTable(window=8, max_clients=3)
    for seq in range(1, 200):
        table.record(req(1, seq), seq, 0)
    assert len(table._clients[b"c1"].committed) <= 8 + 8 // 4
    for client in range(2, 6):
        table.record(req(client, 1), 1, 0)
    assert len(table) == 3
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


def test_take_respects_the_byte_limit_but_always_makes_progress() -> None:
    pool = Mempool()
    for seq in range(1, 4):
        pool.add(req(1, seq, size=100))
    assert len(pool.take(10, 50)) == 1  # one request even if it alone is larger
    assert pool.peek(10, 300) == (2, 2 * req(1, 2, size=100).size)  # the waiting ones only


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

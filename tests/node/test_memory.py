"""The replica's memory figures: resident set, Python's allocator and glibc's malloc."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from bft.node.memory import Malloc, resident_bytes, snapshot
from bft.testbed import init_cluster

from .harness import running


def vm_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_resident_set_matches_the_kernel() -> None:
    rss = resident_bytes()
    assert rss is not None
    assert abs(rss - vm_rss()) < 8 << 20


def test_malloc_figures_follow_allocations() -> None:
    malloc = Malloc()
    if malloc.stats() is None:
        pytest.skip("no glibc mallinfo2 here")
    before = snapshot(malloc)
    held = [bytes(1000) + bytes([i % 256]) for i in range(20_000)]  # above pymalloc's 512 B
    during = snapshot(malloc)
    assert during["malloc_in_use"] - before["malloc_in_use"] >= 18_000_000
    assert during["python_blocks"] >= before["python_blocks"]
    del held
    after = snapshot(malloc)
    assert during["malloc_in_use"] - after["malloc_in_use"] >= 18_000_000
    # Freed chunks stay in the arena until trimmed; the trim must not lose anything live.
    malloc.trim()
    assert snapshot(malloc)["malloc_in_use"] <= after["malloc_in_use"] + (1 << 20)


async def test_a_replica_trims_malloc_as_configured(tmp_path: Path) -> None:
    if not Malloc().can_trim:
        pytest.skip("no glibc malloc_trim here")
    init_cluster(tmp_path, protocol="raft", n=3)
    for i, every in ((0, 0.1), (1, 0)):
        path = tmp_path / f"replica-{i}.toml"
        path.write_text(path.read_text() + f"\n[memory]\ntrim_every_s = {every}\n")
    with trio.fail_after(60):
        async with running(tmp_path) as nodes:
            trimming, never = nodes.replicas[0], nodes.replicas[1]
            while trimming.stats["memory_trims"] < 3:
                await trio.sleep(0.05)
            status = trimming.status(verbose=True)
            assert status["stats"]["memory_trim_max_us"] > 0
            assert status["memory"]["rss"] > 0 and "malloc_free" in status["memory"]
            assert status["rss_mb"] > 0
            assert never.stats["memory_trims"] == 0


def test_a_replica_process_collects_cyclic_garbage_less_often() -> None:
    import gc

    from bft.node.memory import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0  # what existed at start is out of the walks
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_transaction_the_pending_pool_drops_leaves_no_route_behind(tmp_path: Path) -> None:
    """A replica remembers which client connection to answer for each admitted transaction. One
    its core had no room for is pending nowhere here: its route goes at once (counted, and
    logged as ``overload``), instead of staying for ROUTE_TTL_S when the client gives up."""
    from bft.client import ClientConfig, open_client

    init_cluster(tmp_path, protocol="pbft", n=4)
    for i in range(4):
        path = tmp_path / f"replica-{i}.toml"
        path.write_text(path.read_text() + "\n[pbft]\nmempool_requests = 2\n")
    config = ClientConfig.from_cluster(tmp_path, timeout=1.0)
    with trio.fail_after(60):
        async with running(tmp_path) as nodes:
            async with open_client(config) as client:
                results = await client.submit_many([b"tx %d" % i for i in range(60)])
            assert any(not isinstance(r, Exception) for r in results)
            replicas = list(nodes.replicas.values())
            while (
                any(r.status()["mempool"] for r in replicas)
                or len(
                    {r.store.height for r in replicas}  # type: ignore[union-attr]
                )
                != 1
            ):
                await trio.sleep(0.05)
            assert all(r.stats["client_txs_dropped"] > 0 for r in replicas)
            assert [len(r._routes) for r in replicas] == [0] * 4


async def test_a_full_client_table_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``max_clients`` the table forgets the clients whose last commit is oldest (a memory
    bound), and their old transactions would look new again: the replica says so in its log
    and its status, so the limit can be raised before that matters."""
    import logging

    from bft.client import ClientConfig, open_client

    init_cluster(tmp_path, protocol="pbft", n=4)
    for i in range(4):
        path = tmp_path / f"replica-{i}.toml"
        path.write_text(path.read_text() + "\n[pbft]\nmax_clients = 2\n")
    caplog.set_level(logging.WARNING, logger="bft.replica")
    with trio.fail_after(60):
        async with running(tmp_path) as nodes:
            for name in (b"first", b"second", b"third", b"fourth"):
                config = ClientConfig.from_cluster(tmp_path, timeout=30, client_id=name)
                async with open_client(config) as client:
                    await client.submit(b"hello")
            while len({r.store.height for r in nodes.replicas.values()}) != 1:  # type: ignore[union-attr]
                await trio.sleep(0.05)
            for replica in nodes.replicas.values():
                table = replica.status(verbose=True)["client_table"]
                assert table["clients"] == 2 and table["forgotten"] == 2, table
    warnings = [r.getMessage() for r in caplog.records if "client table is full" in r.getMessage()]
    assert len(warnings) == 4 and "raise [pbft] max_clients" in warnings[0]  # once a replica


async def test_a_subscriber_is_sent_the_ledger_as_fast_as_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber asking for the ledger from height 1, many times over, and reading nothing:
    the replica runs one catch-up for the connection and stops reading the ledger once a little
    is queued (the socket's buffers aside), instead of queueing the whole ledger in memory. Once
    the subscriber reads, it gets every block in order."""
    from bft.client import ClientConfig, open_client
    from bft.client.protocol import TO_CLIENT, Blocks, Subscribe
    from bft.node import replica as replica_module
    from network import Hello, dial

    monkeypatch.setattr(replica_module, "BACKFILL_AHEAD_BYTES", 64 << 10)
    init_cluster(tmp_path, protocol="pbft", n=4)
    with trio.fail_after(120):
        async with running(tmp_path) as nodes:
            # Blocks of at most 20 transactions of 4 KB: catch-up frames of 32 blocks, ~2.6 MB.
            config = ClientConfig.from_cluster(tmp_path, batch_max=20)
            async with open_client(config) as client:
                for start in range(0, 6_000, 500):
                    await client.submit_many(
                        [bytes(4000) + b"%d" % i for i in range(start, start + 500)]
                    )
                replica = nodes.replicas[0]
                height = replica.store.height
                ledger_bytes = sum(len(t) for b in replica.store.blocks(1, height) for t in b.txs)
                assert ledger_bytes > 23_000_000
                hello = Hello(
                    kind="client", id=0, chain_id=client.chain_id, protocol=config.protocol
                )
                framed = await dial(client._endpoint, *config.replicas[0], hello, expect_replica=0)
                await framed.send([Subscribe(start=1).encode() for _ in range(50)])
                await trio.sleep(1.0)
                (session,) = [s for s in replica.sessions.values() if s.subscribed_from]
                assert session.backfilling
                # The socket's buffers hold up to ~10 MB on loopback.
                assert session.subscribed_from - 1 < height * 0.7, "read ahead of the subscriber"
                assert session.outbox.queued_bytes < 2 << 20  # one frame: ~1 MiB and a block
                expected = 1
                while expected <= height:
                    frame = await framed.receive()
                    message = TO_CLIENT.decode(frame)
                    if not isinstance(message, Blocks):
                        continue
                    for block in message.blocks:
                        assert block.height <= expected, (block.height, expected)
                        if block.height == expected:
                            expected += 1
                await trio.aclose_forcefully(framed.stream)


async def test_a_catch_up_under_load_is_one_stream_in_order(tmp_path: Path) -> None:
    """Blocks committed while a subscriber catches up are sent after the ones before them, not
    in the middle of the catch-up (which made the subscriber see a gap and start over)."""
    from bft.client import ClientConfig, open_client
    from bft.client.protocol import TO_CLIENT, Blocks, Subscribe
    from network import Hello, dial

    init_cluster(tmp_path, protocol="pbft", n=4)
    with trio.fail_after(120):
        async with running(tmp_path) as nodes:
            config = ClientConfig.from_cluster(tmp_path, batch_max=5)
            async with open_client(config) as client, trio.open_nursery() as load:
                for start in range(0, 600, 100):
                    await client.submit_many([b"before %d" % i for i in range(start, start + 100)])

                async def keep_committing() -> None:
                    for i in range(10_000):
                        await client.submit(b"during %d" % i)

                load.start_soon(keep_committing)
                hello = Hello(
                    kind="client", id=0, chain_id=client.chain_id, protocol=config.protocol
                )
                framed = await dial(client._endpoint, *config.replicas[1], hello, expect_replica=1)
                await framed.send([Subscribe(start=1).encode()])
                replica = nodes.replicas[1]
                target = replica.store.height + 30
                expected = 1
                while expected <= target:
                    frame = await framed.receive()
                    message = TO_CLIENT.decode(frame)
                    if isinstance(message, Blocks):
                        for block in message.blocks:
                            assert block.height == expected, (block.height, expected)
                            expected += 1
                load.cancel_scope.cancel()
                await trio.aclose_forcefully(framed.stream)


def test_a_load_run_collects_less_often_and_restores_the_collector_after() -> None:
    import gc

    from bft.node.memory import GC_THRESHOLDS, collecting_less_often

    before = gc.get_threshold()
    with pytest.raises(RuntimeError), collecting_less_often():
        assert gc.get_threshold() == GC_THRESHOLDS
        raise RuntimeError("the load failed")
    assert gc.get_threshold() == before

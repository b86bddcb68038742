"""A replica stopped and started again from its data directory recovers: it resumes from its
ledger and protocol log, fetches what it missed from its peers, and ends with the same ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bft.client import ClientConfig, open_client
from bft.protocols import available
from bft.testbed import init_cluster, verify_cluster

from .harness import InProcessCluster


async def commit(config: ClientConfig, label: bytes, count: int) -> list[bytes]:
    async with open_client(config) as client:
        results = await client.submit_many([label + b" %d" % i for i in range(count)])
    assert all(not isinstance(r, Exception) for r in results), results[:3]
    return [r.txid for r in results]  # type: ignore[union-attr]


async def converged(nodes: InProcessCluster) -> None:
    while len(set(nodes.heights().values())) != 1:
        await trio.sleep(0.05)


@pytest.mark.parametrize("protocol", available())
async def test_a_stopped_replica_restarts_from_its_data_dir_and_catches_up(
    tmp_path: Path, protocol: str
) -> None:
    n = 3 if protocol == "raft" else 4
    cluster = init_cluster(tmp_path, protocol=protocol, n=n)
    config = ClientConfig.from_cluster(tmp_path, timeout=30)
    acknowledged: list[bytes] = []
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(cluster, nursery)
            await nodes.start_all()
            acknowledged += await commit(config, b"before", 300)
            victim = n - 1
            await converged(nodes)
            before = nodes.replicas[victim].store.height  # type: ignore[union-attr]
            await nodes.stop(victim)
            acknowledged += await commit(config, b"while down", 300)
            restarted = await nodes.start(victim)
            # It resumed from its own ledger, not from scratch.
            assert restarted.store is not None and restarted.store.height >= before > 0
            acknowledged += await commit(config, b"after", 100)
            await converged(nodes)
            nursery.cancel_scope.cancel()
    report = verify_cluster(cluster, acknowledged)
    assert report.ok, report.problems
    assert report.identical, report.heights


@pytest.mark.parametrize("fault", ["goes away", "sends nothing"])
async def test_a_block_stream_moves_on_from_a_replica_that_fails_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The replica a reader subscribed to (replica 0, the first asked) stops, or accepts the
    subscription and sends no block (as a faulty one may): the reader asks the next replica and
    gets every block in order."""
    import bft.client.client

    monkeypatch.setattr(bft.client.client, "STREAM_STALL_S", 1.0)
    cluster = init_cluster(tmp_path, protocol="pbft", n=4)
    config = ClientConfig.from_cluster(tmp_path, timeout=30)
    seen: list[int] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(cluster, nursery)
            await nodes.start_all()
            await commit(config, b"first", 20)
            if fault == "sends nothing":

                async def send_nothing(*_: object) -> None:
                    return None

                mute = nodes.replicas[0]
                mute._backfill = send_nothing  # type: ignore[method-assign]
                mute._feed_subscribers = lambda blocks: None  # type: ignore[method-assign]
            async with open_client(config, wait=4) as reader:
                stream = reader.blocks(1)
                if fault == "goes away":
                    seen.append((await stream.__anext__()).height)  # from replica 0
                    await nodes.stop(0)
                    await commit(config, b"second", 20)
                top = max(nodes.heights().values())
                while not seen or seen[-1] < top:
                    seen.append((await stream.__anext__()).height)
                await stream.aclose()
                if fault == "sends nothing":
                    assert reader.stats["block_stream_stalls"] >= 1
            nursery.cancel_scope.cancel()
    assert seen == list(range(1, top + 1))


@pytest.mark.parametrize("snapshot", ["kept", "removed", "damaged"])
async def test_a_restarted_cluster_remembers_transactions_older_than_its_recent_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: str
) -> None:
    """Exactly once across restarts: a transaction committed long before (more blocks ago than
    a replica reads back at start), submitted again after every replica restarted, is answered
    with its first place, not ordered a second time. The client table comes from the snapshot
    written at shutdown, or, with that file gone or damaged, from replaying the whole ledger."""
    import bft.node.clients
    import bft.node.replica

    monkeypatch.setattr(bft.node.replica, "RECENT_BLOCKS", 4)
    monkeypatch.setattr(bft.node.clients, "SNAPSHOT_EVERY_BLOCKS", 8)
    cluster = init_cluster(tmp_path, protocol="pbft", n=4)
    config = ClientConfig.from_cluster(tmp_path, timeout=30, client_id=b"replayed", first_seq=5)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(cluster, nursery)
            await nodes.start_all()
            async with open_client(config) as client:
                first = await client.submit(b"pay 10")
            others = ClientConfig.from_cluster(tmp_path, timeout=30)
            async with open_client(others) as client:
                for i in range(24):  # one block each: far more than RECENT_BLOCKS
                    await client.submit(b"filler %d" % i)
            await converged(nodes)
            files = [nodes.replicas[i].client_file for i in range(4)]
            table = nodes.replicas[0].status(verbose=True)["client_table"]
            assert table["clients"] == 2 and table["places"] == 25
            assert table["snapshot_height"] >= 8
            # Taken every SNAPSHOT_EVERY_BLOCKS blocks while running.
            assert all(f is not None and f.path.exists() and f.height >= 8 for f in files)
            for i in range(4):
                await nodes.stop(i)
            for f in files:
                assert f is not None
                if snapshot == "removed":
                    f.path.unlink()
                elif snapshot == "damaged":
                    f.path.write_bytes(f.path.read_bytes()[:-1] + b"!")
            await nodes.start_all()
            height = max(nodes.heights().values())
            assert height > first.header.height + 4
            async with open_client(config) as client:
                again = await client.submit(b"pay 10")
            assert again.txid == first.txid
            assert again.header.height == first.header.height and again.index == first.index
            await converged(nodes)
            assert max(nodes.heights().values()) == height  # nothing new was ordered
            nursery.cancel_scope.cancel()
    report = verify_cluster(cluster, [first.txid])
    assert report.ok and report.identical, report.problems

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


async def test_a_block_stream_moves_on_when_its_replica_goes_away(tmp_path: Path) -> None:
    cluster = init_cluster(tmp_path, protocol="pbft", n=4)
    config = ClientConfig.from_cluster(tmp_path, timeout=30)
    seen: list[int] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(cluster, nursery)
            await nodes.start_all()
            await commit(config, b"first", 20)
            async with open_client(config, wait=4) as reader:
                stream = reader.blocks(1)
                seen.append((await stream.__anext__()).height)  # subscribed to replica 0
                await nodes.stop(0)
                await commit(config, b"second", 20)
                top = max(nodes.heights().values())
                while seen[-1] < top:
                    seen.append((await stream.__anext__()).height)
                await stream.aclose()
            nursery.cancel_scope.cancel()
    assert seen == list(range(1, top + 1))

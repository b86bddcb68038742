"""Per-connection client limits on real replica processes: a configured transaction rate holds
a fast client to it, and replaying transactions the ledger already holds costs a connection its
allowance like refusals do (TESTING.md scenario 21, "per-client limits are configurable")."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import trio

from bft.client import open_client
from bft.testbed import LoadResult, Testbed, ask_statuses, drive, init_cluster, load_cluster

RATE = 200.0
COUNT = 1000


def limit_clients(directory: Path, n: int, lines: str) -> None:
    for replica in range(n):
        path = directory / f"replica-{replica}.toml"
        path.write_text(path.read_text().replace("[limits]\n", f"[limits]\n{lines}\n"))


async def replica_stats(bed: Testbed) -> dict[int, dict[str, int]]:
    async with open_client(bed.client_config(admin=True), wait=0) as client:
        statuses = await ask_statuses(client, bed.n, timeout=2.0, verbose=True)
    return {r: s["stats"] for r, s in statuses.items() if s}


async def test_a_client_connection_is_held_to_its_configured_rate(tmp_path: Path) -> None:
    init_cluster(tmp_path, protocol="pbft", n=4)
    limit_clients(tmp_path, 4, f"client_txs_per_s = {RATE:g}")
    bed = Testbed(tmp_path)
    bed.start()
    try:
        with trio.fail_after(120):
            await bed.wait_ready()
            async with open_client(bed.client_config(timeout=60)) as client:
                result = LoadResult(COUNT)
                began = time.monotonic()
                await drive(client, count=COUNT, window=COUNT, result=result)
                elapsed = time.monotonic() - began
            stats = await replica_stats(bed)
    finally:
        await trio.to_thread.run_sync(bed.stop)
    assert result.committed == COUNT, result
    # A second's worth is banked, the rest comes at the configured rate.
    floor = (COUNT - RATE) / RATE
    print(f"{COUNT} transactions at a limit of {RATE:g}/s: {elapsed:.1f} s (floor {floor:.1f} s)")
    assert elapsed >= 0.9 * floor, elapsed
    assert elapsed < 4 * floor + 10, elapsed  # limited, not stalled
    assert all(s["client_rate_limited"] > 0 for s in stats.values()), stats


async def test_replayed_settled_transactions_cost_the_allowance(tmp_path: Path) -> None:
    """The "duplicates" flood resends one committed transaction: each replica answers the
    first copies again and then stops reading from the connection, counting both."""
    init_cluster(tmp_path, protocol="pbft", n=4, require_client_signatures=True)
    bed = Testbed(tmp_path)
    bed.start()
    try:
        with trio.fail_after(120):
            await bed.wait_ready()
            flood = await trio.to_thread.run_sync(
                lambda: subprocess.run(
                    [sys.executable, "-m", "bft.testbed.hostile", "--dir", str(tmp_path)]
                    + ["--kind", "duplicates", "--seconds", "3"],
                    capture_output=True,
                    check=True,
                )
            )
            sent = json.loads(flood.stdout)
            stats = await replica_stats(bed)
            statuses = await bed.statuses()
    finally:
        await trio.to_thread.run_sync(bed.stop)
    print(f"duplicates flood sent {sent}")
    assert all(s["client_txs_settled_again"] > 0 for s in stats.values()), stats
    assert all(s["client_throttled"] > 0 for s in stats.values()), stats
    assert {s["height"] for s in statuses.values() if s} == {1}, statuses  # it committed once


async def test_a_stopped_replica_holds_up_neither_the_client_nor_its_allowance(
    tmp_path: Path,
) -> None:
    """With one replica stopped (SIGSTOP), the client keeps committing through the others: what
    it sends that replica waits in that connection's own queue. Resumed, the replica reads the
    backlog without throttling the client."""
    import signal

    init_cluster(tmp_path, protocol="pbft", n=4)
    bed = Testbed(tmp_path)
    bed.start()
    try:
        with trio.fail_after(120):
            await bed.wait_ready()
            async with open_client(bed.client_config(timeout=60)) as client:
                await drive(client, count=100, window=100)
                bed.processes.signal(3, signal.SIGSTOP)
                stopped = LoadResult(3000)
                began = time.monotonic()
                await drive(client, count=3000, window=500, result=stopped)
                elapsed = time.monotonic() - began
                bed.processes.signal(3, signal.SIGCONT)
                resumed = await drive(client, count=1500, window=500)
            await bed.wait_converged(60)
            stats = await replica_stats(bed)
    finally:
        await trio.to_thread.run_sync(bed.stop)
    assert stopped.committed == 3000 and resumed.committed == 1500, (stopped, resumed)
    assert elapsed < 30, elapsed
    assert stats[3].get("client_throttled", 0) == 0, stats[3]


async def test_settled_transactions_sent_again_cost_the_allowance_only_when_repeated(
    tmp_path: Path,
) -> None:
    """Committed transactions arriving once each (a lagging replica's backlog) are answered
    again and counted; the same ones again within a second (a replay flood) are charged."""
    from bft.client.protocol import Submit
    from crypto.keyfiles import load_committee
    from network import Endpoint, Hello, NetworkConfig, dial
    from network.tls import client_context, client_files

    init_cluster(tmp_path, protocol="pbft", n=4)
    cluster = load_cluster(tmp_path)
    bed = Testbed(tmp_path)
    bed.start()
    try:
        with trio.fail_after(120):
            await bed.wait_ready()
            async with open_client(bed.client_config(timeout=60)) as client:
                done = await drive(client, count=600, window=600, keep_receipts=True)
            raws = [r.tx for r in done.receipts]
            endpoint = Endpoint(
                load_committee(cluster.committee_file),
                "pbft",
                None,
                client_context(client_files(cluster.tls_dir, "default")),
                NetworkConfig(),
            )
            hello = Hello(kind="client", id=0, chain_id=cluster.chain_id, protocol="pbft")
            framed = await dial(endpoint, *cluster.clients[0], hello, expect_replica=0)
            await framed.send(
                [Submit(txs=tuple(raws[i : i + 100])).encode() for i in range(0, 600, 100)]
            )
            await trio.sleep(1.0)
            once = (await replica_stats(bed))[0]
            for _ in range(5):
                await framed.send([Submit(txs=tuple(raws[:100])).encode()])
            await trio.sleep(1.0)
            again = (await replica_stats(bed))[0]
            await framed.aclose()
    finally:
        await trio.to_thread.run_sync(bed.stop)
    assert once.get("client_txs_settled_again", 0) >= 600, once
    assert once.get("client_throttled", 0) == 0, once
    assert again.get("client_throttled", 0) >= 1, again

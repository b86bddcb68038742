"""A replica paused (SIGSTOP) while the others commit through many checkpoints, then resumed
(TESTING.md scenario 17): nobody's memory grows with the pause (the peers' queues towards it
are bounded, its own backlog is dropped rather than replayed), and it catches up by state
transfer to the same ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bft.client import open_client
from bft.testbed import Testbed, init_cluster, verify_cluster

from .helpers import describe

PAUSED = 3
CHECKPOINTS = 12
INTERVAL = 16  # PBFT's default checkpoint interval


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def memory(bed: Testbed) -> dict[int, float]:
    pids = {r: bed.processes.pid(r) for r in range(bed.n)}
    return {r: rss_mb(pid) for r, pid in pids.items() if pid is not None}


async def commit_blocks(bed: Testbed, blocks: int) -> list[bytes]:
    """At least ``blocks`` blocks, ten transactions each."""
    txids: list[bytes] = []
    async with open_client(bed.client_config(timeout=60, batch_max=10, linger=0)) as client:
        for round_ in range(blocks):
            results = await client.submit_many([b"pause %d %d" % (round_, i) for i in range(10)])
            assert all(not isinstance(r, Exception) for r in results), results[:2]
            txids += [r.txid for r in results]  # type: ignore[union-attr]
    return txids


async def test_a_paused_replica_stays_bounded_and_catches_up(tmp_path: Path) -> None:
    init_cluster(tmp_path, protocol="pbft", n=4)
    bed = Testbed(tmp_path)
    bed.start()
    acknowledged: list[bytes] = []
    try:
        with trio.fail_after(240):
            await bed.wait_ready()
            acknowledged += await commit_blocks(bed, 2 * INTERVAL)  # warm up
            before = memory(bed)
            start = await bed.wait_converged(60)
            bed.processes.pause(PAUSED)
            acknowledged += await commit_blocks(bed, CHECKPOINTS * INTERVAL)
            during = memory(bed)
            bed.processes.resume(PAUSED)
            acknowledged += await commit_blocks(bed, 4)
            height = await bed.wait_converged(120)
            after = memory(bed)
    except trio.TooSlowError:
        pytest.fail(f"stuck; statuses: {await describe(bed)}")
    finally:
        outcome = await trio.to_thread.run_sync(bed.stop)
    print(
        f"paused for {height - start} blocks; RSS MB before {before}, while paused {during}, "
        f"after catching up {after}"
    )
    assert set(outcome.values()) == {"exited"}, outcome
    assert height - start >= CHECKPOINTS * INTERVAL
    growth = {r: after[r] - before[r] for r in before}
    assert all(g < 60 for g in growth.values()), growth
    assert after[PAUSED] < 1.5 * max(after[r] for r in after if r != PAUSED), after
    report = verify_cluster(bed.cluster, acknowledged)
    assert report.ok, report.problems
    assert report.identical, report.heights

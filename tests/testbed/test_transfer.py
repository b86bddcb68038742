"""``bft testbed transfer``: a Raft leader hands leadership to a chosen follower for
maintenance, with real processes; the cluster keeps every acknowledged transaction."""

from __future__ import annotations

from pathlib import Path

import trio

from bft.client import open_client
from bft.testbed import Testbed, init_cluster, verify_cluster

from .helpers import run_bft as bft
from .helpers import wait_agreed_leader


async def test_raft_leadership_moves_to_the_replica_asked_for(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    init_cluster(directory, protocol="raft", n=3)
    bed = Testbed(directory)
    bed.start()
    try:
        with trio.fail_after(120):
            await bed.wait_ready()
            leader = await wait_agreed_leader(bed)
            async with open_client(bed.client_config()) as client:
                before = await client.submit_many([b"before %d" % i for i in range(200)])
            target = (leader + 1) % 3
            moved = await trio.to_thread.run_sync(
                bft, "testbed", "transfer", "--dir", str(directory), "--to", str(target)
            )
            assert moved.returncode == 0, moved.stderr
            assert f"from replica {leader} to {target}" in moved.stdout
            assert await wait_agreed_leader(bed) == target
            again = await trio.to_thread.run_sync(
                bft, "testbed", "transfer", "--dir", str(directory), "--to", str(target)
            )
            assert "already leads" in again.stdout
            bad = await trio.to_thread.run_sync(
                bft, "testbed", "transfer", "--dir", str(directory), "--to", "7"
            )
            assert (
                bad.returncode != 0 and bad.stderr.count("\n") == 1 and "no replica 7" in bad.stderr
            )
            async with open_client(bed.client_config()) as client:
                after = await client.submit_many([b"after %d" % i for i in range(200)])
            await bed.wait_converged(30)
    finally:
        await trio.to_thread.run_sync(bed.stop)
    receipts = [*before, *after]
    assert all(not isinstance(r, Exception) for r in receipts)
    report = verify_cluster(bed.cluster, [r.txid for r in receipts])  # type: ignore[union-attr]
    assert report.ok, report.problems

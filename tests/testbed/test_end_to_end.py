"""End to end with real processes: every replica a `bft replica` process over TLS, a real disk.

Per protocol: a few thousand transactions through the client library; the leader is killed with
SIGKILL mid-load and restarted. Afterwards every acknowledged transaction is in every ledger
exactly once, all ledgers are identical block hash by block hash and verify against the
committee, the restarted replica caught up and follows the same leader, and SIGTERM stops every
replica cleanly (exit status 0, quickly).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from bft.client import open_client
from bft.protocols import available
from bft.testbed import LoadResult, Testbed, drive, init_cluster, verify_cluster

from .helpers import current_leader, describe, wait_agreed_leader, wait_until

COUNT = 3000


def make_testbed(directory: Path, protocol: str) -> Testbed:
    init_cluster(directory, protocol=protocol, n=3 if protocol == "raft" else 4)
    return Testbed(directory)


@pytest.mark.parametrize("protocol", available())
async def test_kill_the_leader_mid_load_then_restart_it(tmp_path: Path, protocol: str) -> None:
    bed = make_testbed(tmp_path / "cluster", protocol)
    bed.start()
    result = LoadResult(COUNT)
    victim = -1
    try:
        with trio.fail_after(150):
            await bed.wait_ready()
            async with open_client(bed.client_config(timeout=90)) as client:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        lambda: drive(
                            client, count=COUNT, window=200, keep_receipts=True, result=result
                        )
                    )
                    await wait_until(lambda: result.committed >= COUNT // 3, "a third committed")
                    victim = await current_leader(bed)
                    bed.processes.kill(victim)
                    mark = result.committed
                    # The others elect or change view and go on committing without it.
                    await wait_until(
                        lambda: result.committed >= mark + COUNT // 6, "commits without the leader"
                    )
                    bed.processes.start(victim)
                    await bed.wait_ready([victim])
                assert (result.committed, result.refused, result.indeterminate) == (COUNT, 0, 0)
                # A little more load with the restarted replica back in.
                more = await client.submit_many([b"after restart %d" % i for i in range(100)])
                assert all(not isinstance(r, Exception) for r in more), more
            height = await bed.wait_converged(60)
            assert height > 0
            await wait_agreed_leader(bed)
    except trio.TooSlowError:
        pytest.fail(f"stuck; statuses: {await describe(bed)}; load: {result.summary()}")
    finally:
        began = time.monotonic()
        outcome = await trio.to_thread.run_sync(bed.stop)
        stopping = time.monotonic() - began
    assert outcome == {i: "exited" for i in range(bed.n)}, outcome
    assert stopping < 8, f"SIGTERM took {stopping:.1f} s"
    acknowledged = [r.txid for r in result.receipts] + [r.txid for r in more]  # type: ignore[union-attr]
    report = verify_cluster(bed.cluster, acknowledged)
    assert report.ok, report.problems
    assert report.identical, report.heights
    assert report.ledgers[victim].height >= height  # caught up (identical, above)
    assert sum(c.transactions for c in report.ledgers) == bed.n * report.ledgers[0].transactions
    assert report.ledgers[0].transactions == COUNT + 100

"""Soak (not in the default run: `pytest -m soak tests/testbed`): real processes under a sequence
of faults while load runs, per protocol; afterwards every acknowledged transaction is in every
ledger exactly once and all ledgers are identical and verify.

Faults, in order: kill -9 a follower and restart it; pause the leader past its timeouts and
resume it (its stale messages must be refused); isolate a minority by a partition, then heal;
drop 5 % of one replica's messages; finally kill -9 *every* replica mid-load and restart them all
(each recovers from its own disk: TESTING.md scenario 15).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from bft.client import open_client
from bft.protocols import available
from bft.testbed import LoadResult, Testbed, drive, init_cluster, verify_cluster
from bft.testbed.faults import apply, plan_heal, plan_link, plan_partition

from .helpers import current_leader, describe, wait_until

COUNT = 20_000


@pytest.mark.soak
@pytest.mark.parametrize("protocol", available())
async def test_load_through_a_sequence_of_faults(tmp_path: Path, protocol: str) -> None:
    n = 3 if protocol == "raft" else 4
    init_cluster(tmp_path / "cluster", protocol=protocol, n=n)
    bed = Testbed(tmp_path / "cluster")
    admin = bed.client_config(admin=True)
    rng = random.Random(protocol)
    result = LoadResult(COUNT)
    bed.start()
    try:
        with trio.fail_after(600):
            await bed.wait_ready()
            async with (
                open_client(bed.client_config(timeout=120)) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(
                    lambda: drive(
                        client, count=COUNT, window=300, keep_receipts=True, result=result
                    )
                )

                async def progress(amount: int) -> None:
                    mark = result.committed
                    await wait_until(lambda: result.committed >= min(COUNT, mark + amount), "")

                await progress(1000)
                leader = await current_leader(bed)
                follower = rng.choice([i for i in range(n) if i != leader])
                bed.processes.kill(follower)
                await progress(1500)
                bed.processes.start(follower)
                await bed.wait_ready([follower])

                leader = await current_leader(bed)
                bed.processes.pause(leader)
                await trio.sleep(3)  # longer than every protocol's view/election timeout
                bed.processes.resume(leader)
                await progress(1500)

                minority = [rng.randrange(n)]
                rest = [i for i in range(n) if i not in minority]
                await apply(admin, plan_partition([minority, rest], n))
                await progress(1500)
                await apply(admin, plan_heal(n))
                await apply(admin, plan_link("drop", rng.randrange(n), n, 0.05))
                await progress(1500)
                await apply(admin, plan_heal(n))

                for replica in range(n):
                    bed.processes.kill(replica)
                bed.start()
                await bed.wait_ready()
            assert (result.committed, result.refused) == (COUNT, 0), (
                result.summary(),
                result.errors,
            )
            await bed.wait_converged(60)
    except trio.TooSlowError:
        pytest.fail(f"stuck; statuses: {await describe(bed)}; load: {result.summary()}")
    finally:
        outcome = await trio.to_thread.run_sync(bed.stop)
    assert set(outcome.values()) == {"exited"}, outcome
    report = verify_cluster(bed.cluster, [r.txid for r in result.receipts])
    assert report.ok, report.problems
    assert report.identical, report.heights

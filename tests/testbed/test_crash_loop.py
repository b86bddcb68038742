"""kill -9 of every replica mid-load, again and again (TESTING.md scenario 15): after each round
every replica restarts from its own disk; at the end nothing acknowledged is lost, nothing is
committed twice, and every ledger verifies and matches the others.

The default run does ``CI_ROUNDS`` rounds with PBFT (a round takes 4 to 5 s on two cores:
four processes start and elect a leader); ``pytest -m soak tests/testbed/test_crash_loop.py``
does ``ROUNDS`` rounds for each protocol.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from bft.testbed import Testbed, init_cluster, verify_cluster
from bft.testbed.chaos import _open_client, record_load
from bft.testbed.history import OK, EventLog, History, check_history
from ledger.store import LedgerStore

from .helpers import describe, wait_until

ROUNDS = 20
CI_ROUNDS = 8


async def crash_loop(directory: Path, protocol: str, rounds: int) -> None:
    n = 3 if protocol == "raft" else 4
    init_cluster(directory, protocol=protocol, n=n)
    bed = Testbed(directory)
    rng = random.Random(protocol)
    history, log = History(), EventLog()
    stop = trio.Event()
    acked_at_crash: list[int] = []
    bed.start()
    try:
        with trio.fail_after(60 + 20 * rounds):
            await bed.wait_ready()
            async with trio.open_nursery() as nursery:
                config = bed.client_config(timeout=60)
                for c in range(2):
                    client = await nursery.start(_open_client, config)
                    nursery.start_soon(record_load, client, f"c{c}", 1 + 7 * c, history, log, stop)
                for _ in range(rounds):

                    def acked() -> int:
                        return sum(1 for op in history.ops if op.outcome == OK)

                    await wait_until(
                        lambda mark=acked(): acked() >= mark + 5,  # noqa: B008
                        "progress before the crash",
                    )
                    await trio.sleep(rng.uniform(0.0, 0.3))
                    acked_at_crash.append(acked())
                    for replica in range(n):
                        await trio.to_thread.run_sync(bed.processes.kill, replica)
                    bed.start()
                    await bed.wait_ready(timeout=60)
                    print(
                        f"round {len(acked_at_crash)}: {acked()} acknowledged at {log.now():.1f} s"
                    )
                await wait_until(
                    lambda mark=acked(): acked() >= mark + 5,  # noqa: B008
                    "progress after the last crash",
                )
                stop.set()
                await wait_until(
                    lambda: all(op.outcome != "pending" for op in history.ops), "load to drain"
                )
                nursery.cancel_scope.cancel()
            await bed.wait_converged(60)
    except trio.TooSlowError:
        pytest.fail(f"stuck; statuses: {await describe(bed)}")
    finally:
        outcome = await trio.to_thread.run_sync(bed.stop)
    assert set(outcome.values()) == {"exited"}, outcome
    assert len(acked_at_crash) == rounds and acked_at_crash == sorted(acked_at_crash)
    acknowledged = [op.raw for op in history.ops if op.outcome == OK]
    report = verify_cluster(bed.cluster)
    assert report.ok, report.problems
    assert report.identical, report.heights
    with LedgerStore.open(
        bed.cluster.data_dir(0) / "ledger", chain_id=bed.cluster.chain_id, readonly=True
    ) as store:
        blocks = list(store.blocks(1, store.height))
    checked = check_history(history, blocks, chain_id=bed.cluster.chain_id)
    assert checked.ok, checked.violations[:5]
    assert checked.acknowledged == len(acknowledged) > rounds * 5


async def test_kill_every_replica_mid_load_again_and_again(tmp_path: Path) -> None:
    await crash_loop(tmp_path, "pbft", CI_ROUNDS)


@pytest.mark.soak
@pytest.mark.parametrize("protocol", ["pbft", "hotstuff", "raft"])
async def test_kill_every_replica_mid_load_twenty_times_soak(tmp_path: Path, protocol: str) -> None:
    await crash_loop(tmp_path, protocol, ROUNDS)

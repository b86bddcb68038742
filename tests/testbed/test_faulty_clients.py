"""Faulty clients (TESTING.md scenario 21): floods of bad signatures, oversized and duplicate
requests, each from its own process, against a cluster that requires client signatures. None
of them commits anything or triggers a view change, and an honest client keeps committing.

Its share of throughput is printed (docs/reliability.md quotes it). The goal is half of what it
has alone, which each flood leaves it on a quiet machine (0.73-0.99, with the replicas' refusal
allowance per connection); the test holds the line at FLOOR, for runs beside other work."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from bft.client import open_client
from bft.client.client import Client
from bft.testbed import LoadResult, Testbed, drive, init_cluster, verify_cluster

from .helpers import describe

SECONDS = 5.0
FLOOR = 0.15


async def honest_throughput(client: Client, seconds: float) -> LoadResult:
    result = LoadResult(10**9)
    with trio.move_on_after(seconds):
        await drive(client, count=10**9, window=64, result=result, keep_receipts=True)
    # What was cut off in flight is indeterminate; settle it before the next phase.
    await trio.sleep(1.0)
    return result


@pytest.mark.parametrize("kind", ["bad-signatures", "oversized", "duplicates"])
async def test_a_flooding_client_neither_commits_nor_starves_honest_ones(
    tmp_path: Path, kind: str
) -> None:
    init_cluster(tmp_path, protocol="pbft", n=4, require_client_signatures=True)
    bed = Testbed(tmp_path)
    bed.start()
    flood: subprocess.Popen[bytes] | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(trio.fail_after(120))
            await bed.wait_ready()
            # One honest identity (the cluster's signing client) throughout: its sequence
            # numbers keep rising from one phase to the next.
            client = await stack.enter_async_context(
                open_client(bed.client_config(sign=True, timeout=30))
            )
            alone = await honest_throughput(client, SECONDS)
            views = {r: s["view"] for r, s in (await bed.statuses()).items() if s}
            flood = subprocess.Popen(
                [sys.executable, "-m", "bft.testbed.hostile", "--dir", str(tmp_path)]
                + ["--kind", kind, "--seconds", str(SECONDS + 4)],
                stdout=subprocess.PIPE,
            )
            await trio.sleep(1.0)  # the flood is on
            attacked = await honest_throughput(client, SECONDS)
            out, _ = await trio.to_thread.run_sync(flood.communicate)
            sent = json.loads(out)
            after = {r: s["view"] for r, s in (await bed.statuses()).items() if s}
            await bed.wait_converged(60)
    except trio.TooSlowError:
        pytest.fail(f"stuck; statuses: {await describe(bed)}")
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait()
        outcome = await trio.to_thread.run_sync(bed.stop)
    ratio = attacked.tx_per_s / alone.tx_per_s
    print(
        f"{kind}: honest alone {alone.tx_per_s:.0f} tx/s, under the flood "
        f"{attacked.tx_per_s:.0f} tx/s (ratio {ratio:.2f}); flood sent {sent}"
    )
    assert set(outcome.values()) == {"exited"}, outcome
    assert sent["transactions"] > 1000, sent
    assert after == views, "the flood changed the view"
    assert ratio >= FLOOR, (alone.summary(), attacked.summary())
    receipts = [r.txid for r in alone.receipts + attacked.receipts]
    report = verify_cluster(bed.cluster, receipts)
    assert report.ok, report.problems
    assert report.identical, report.heights
    # Nothing of the flood is in the ledger but, for the duplicates, its one valid transaction
    # (once: verify_cluster refuses a transaction twice).
    honest = alone.submitted + attacked.submitted
    allowed = honest + (1 if kind == "duplicates" else 0)
    assert len(receipts) <= report.ledgers[0].transactions <= allowed

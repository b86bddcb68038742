"""Soak (not in the default run: `pytest -m soak tests/testbed`): real processes under a sequence
of faults while load runs, per protocol; afterwards every acknowledged transaction is in every
ledger exactly once and all ledgers are identical and verify.

Faults, in order: kill -9 a follower and restart it; pause the leader past its timeouts and
resume it (its stale messages must be refused); isolate a minority by a partition, then heal;
drop 5 % of one replica's messages; finally kill -9 *every* replica mid-load and restart them all
(each recovers from its own disk: TESTING.md scenario 15).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from statistics import median
from typing import Any

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


SOAK_SECONDS = float(os.environ.get("BFT_SOAK_SECONDS", "1800"))
INTERVAL = max(10.0, SOAK_SECONDS / 30)
CLIENTS = 4
"""Client objects in the soak's load process: the load of several applications, and no single
client's window of outstanding requests (1,000) capping the open loop. Every interval's process
takes the same four identities (``--identities``), as an application's clients that restart
do: the replicas' client table stays the same size, so memory that grows is memory that leaks
(a stream of new identities grows the table up to ``max_client_entries``)."""


def _rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _memory(cluster: Path, n: int) -> str:
    """Where each replica's memory is (verbose status): C malloc's bytes in use / kept free,
    and the objects Python's allocator holds; '-' for a replica that did not answer."""
    from bft.client import ClientConfig

    parts = []
    async with open_client(ClientConfig.from_cluster(cluster)) as client:
        for r in range(n):
            memory = (await client.status(r, verbose=True) or {}).get("memory", {})
            if "malloc_in_use" in memory:
                parts.append(
                    f"{memory['malloc_in_use'] / 2**20:.0f}/{memory['malloc_free'] / 2**20:.0f}/"
                    f"{memory['python_blocks'] / 1000:.0f}k"
                )
            else:
                parts.append("-")
    return "malloc used/free MB, py objects " + " ".join(parts)


def _load_worker(cluster: Path, mode: list[str], duration: float, tag: str) -> dict[str, Any]:
    """One run of ``bench.load_worker`` (a separate process, as the benchmark uses): the load
    generator gets its own interpreter, so its limits are not the cluster's."""
    from bench.cluster_bench import ROOT, child_env, finish_child, read_json_line

    cmd = [sys.executable, "-m", "bench.load_worker", "--cluster", str(cluster), *mode]
    cmd += ["--duration", str(duration), "--drain", "60", "--tag", tag]
    worker = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=child_env()
    )
    try:
        read_json_line(worker, 60, f"load worker {tag}")
        if worker.stdin is None:
            raise RuntimeError("load worker: no stdin")
        worker.stdin.write("go\n")
        worker.stdin.flush()
        return read_json_line(worker, duration + 120, f"load worker {tag}")["result"]
    finally:
        finish_child(worker)


def steadiness_problems(
    rows: list[tuple[float, list[float], float, float, int]], n: int
) -> list[str]:
    """What is not steady in a soak's interval rows (elapsed, RSS per replica, p50, p99,
    errors). The first quarter is warm-up (caches, the client table, malloc's arenas fill);
    the last quarter is compared with the second by medians, so a sawtooth (the cyclic
    collector, malloc's free lists) is not mistaken for growth and one slow
    interval is not mistaken for a trend. Memory: per replica, at most 15 % + 15 MB above the
    second quarter. Latency: p50 at most 1.5x + 50 ms, p99 at most 2x + 200 ms."""
    quarter = max(1, len(rows) // 4)
    early, late = rows[quarter : 2 * quarter], rows[-quarter:]
    problems = []
    for replica in range(n):
        before = median([row[1][replica] for row in early])
        after = median([row[1][replica] for row in late])
        if not after <= before * 1.15 + 15:
            problems.append(f"replica {replica} RSS grew: median {before:.0f} -> {after:.0f} MB")
    for column, name, factor, slack in ((2, "p50", 1.5, 50.0), (3, "p99", 2.0, 200.0)):
        before = median([row[column] for row in early])
        after = median([row[column] for row in late])
        if not after <= before * factor + slack:
            problems.append(f"{name} latency grew: median {before:.1f} -> {after:.1f} ms")
    return problems


@pytest.mark.soak
@pytest.mark.timeout(SOAK_SECONDS + 900)
@pytest.mark.parametrize("protocol", available())
async def test_half_of_peak_load_holds_steady(tmp_path: Path, protocol: str) -> None:
    """``BFT_SOAK_SECONDS`` (default 1800) at half the peak a closed loop finds: replica memory
    flat, latency stable, no errors. The load comes from a separate process per interval
    (open loop, latency counted from when each transaction was due). Prints one line per
    interval (docs/reliability.md)."""
    n = 3 if protocol == "raft" else 4
    cluster = tmp_path / "cluster"
    init_cluster(cluster, protocol=protocol, n=n)
    bed = Testbed(cluster)
    bed.start()
    rows: list[tuple[float, list[float], float, float, int]] = []
    try:
        with trio.fail_after(SOAK_SECONDS + 600):
            await bed.wait_ready()
            peak = await trio.to_thread.run_sync(
                _load_worker, cluster, ["--window", "1000"], 15.0, "peak."
            )
            rate = peak["steady_tps"] / 2
            print(f"{protocol}: peak {peak['steady_tps']:.0f} tx/s; soaking at {rate:.0f} tx/s")
            elapsed = 0.0
            interval = 0
            while elapsed < SOAK_SECONDS:
                interval += 1
                part = await trio.to_thread.run_sync(
                    _load_worker,
                    cluster,
                    ["--rate", f"{rate:.1f}", "--clients", str(CLIENTS), "--identities", "soak"],
                    INTERVAL,
                    f"soak{interval}.",
                )
                elapsed += INTERVAL
                rss = [_rss_mb(bed.processes.pid(r)) for r in range(n)]
                errors = (
                    part["refused"] + part["indeterminate"] + part["unfinished"] + part["not_sent"]
                )
                p50, p99 = part["latency_ms"]["p50"], part["latency_ms"]["p99"]
                rows.append((elapsed, rss, p50, p99, errors))
                memory = await _memory(cluster, n)
                print(
                    f"{protocol} {elapsed:7.0f} s  {part['acked_in_window'] / INTERVAL:7.0f} tx/s  "
                    f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  errors {errors}  "
                    f"RSS MB {' '.join(f'{m:.0f}' for m in rss)}  {memory}",
                    flush=True,
                )
            await bed.wait_converged(60)
    finally:
        outcome = await trio.to_thread.run_sync(bed.stop)
    assert set(outcome.values()) == {"exited"}, outcome
    assert sum(r[4] for r in rows) == 0, rows
    problems = steadiness_problems(rows, n)
    assert not problems, problems
    report = verify_cluster(bed.cluster)
    assert report.ok and report.identical, (report.problems, report.heights)


def _rows(rss: list[float], p50: list[float], p99: list[float]) -> list[Any]:
    return [
        (60.0 * (i + 1), [m, m + 3], a, b, 0)
        for i, (m, a, b) in enumerate(zip(rss, p50, p99, strict=True))
    ]


def test_the_soak_rules_pass_a_sawtooth_and_catch_a_trend() -> None:
    """The soak's steadiness rules, on made-up figures: memory that rises and falls back
    (the shape the cyclic collector gives) and one slow interval pass; memory that keeps
    climbing, or latency that does, fails."""
    sawtooth = [130, 125, 131, 165, 152, 151, 153, 169, 155, 150, 170, 148, 160, 168, 151, 149]
    latency = [44, 53, 95, 122, 168, 75, 91, 63, 86, 70, 80, 75, 66, 90, 72, 81]
    tails = [275, 233, 526, 919, 1009, 240, 1564, 728, 352, 400, 500, 380, 2900, 450, 420, 390]
    assert steadiness_problems(_rows(sawtooth, latency, tails), 2) == []

    climbing = [60 + 8 * i for i in range(16)]
    problems = steadiness_problems(_rows(climbing, latency, tails), 2)
    assert len(problems) == 2 and all("RSS grew" in p for p in problems), problems

    slower = [40 + 30 * i for i in range(16)]
    problems = steadiness_problems(_rows(sawtooth, slower, tails), 2)
    assert problems == ["p50 latency grew: median 205.0 -> 445.0 ms"], problems

"""Replica processes: SIGTERM stops one cleanly and quickly, kill -9 loses nothing acknowledged,
and a stale pid file never gets another process signalled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio

from bft.client import open_client
from bft.testbed import Testbed, TestbedError, init_cluster, verify_cluster


@pytest.fixture
def bed(tmp_path: Path) -> Testbed:
    init_cluster(tmp_path / "one", protocol="pbft", n=1)  # a committee of one commits alone
    testbed = Testbed(tmp_path / "one")
    yield testbed
    testbed.stop(timeout=5)


async def submit(bed: Testbed, label: bytes, count: int) -> list[bytes]:
    async with open_client(bed.client_config(timeout=20)) as client:
        results = await client.submit_many([label + b" %d" % i for i in range(count)])
    assert all(not isinstance(r, Exception) for r in results), results[:3]
    return [r.txid for r in results]  # type: ignore[union-attr]


async def wait_exit(bed: Testbed, pid: int) -> float:
    began = time.monotonic()
    while not bed.processes.wait_exit(0, pid, 0):
        await trio.sleep(0.02)
    return time.monotonic() - began


async def test_sigterm_stops_a_replica_cleanly_and_quickly(bed: Testbed) -> None:
    with trio.fail_after(60):
        (pid,) = [bed.processes.start(0)]
        await bed.wait_ready()
        acknowledged = await submit(bed, b"tx", 200)
        os.kill(pid, signal.SIGTERM)
        took = await wait_exit(bed, pid)
    assert bed.processes.exit_code(0) == 0
    assert took < 5, f"SIGTERM took {took:.1f} s"
    assert "SIGTERM, shutting down" in bed.processes.log_file(0).read_text()
    report = verify_cluster(bed.cluster, acknowledged)
    assert report.ok, report.problems
    assert report.ledgers[0].transactions == 200


async def test_kill_9_loses_nothing_acknowledged(bed: Testbed) -> None:
    with trio.fail_after(60):
        bed.processes.start(0)
        await bed.wait_ready()
        acknowledged = await submit(bed, b"first", 300)
        bed.processes.kill(0)
        assert bed.processes.state(0).state == "stopped"
        bed.processes.start(0)
        await bed.wait_ready()
        acknowledged += await submit(bed, b"second", 100)
    assert bed.stop() == {0: "exited"}
    report = verify_cluster(bed.cluster, acknowledged)
    assert report.ok, report.problems
    assert report.ledgers[0].transactions == 400


async def test_pause_and_resume(bed: Testbed) -> None:
    with trio.fail_after(60):
        bed.processes.start(0)
        await bed.wait_ready()
        bed.processes.pause(0)
        assert bed.processes.state(0).state == "paused"
        assert (await bed.statuses(timeout=0.5))[0] is None
        bed.processes.resume(0)
        assert bed.processes.state(0).state == "running"
        await bed.wait_ready()
        # A paused replica still stops on `down` (it is continued to handle SIGTERM).
        bed.processes.pause(0)
    assert bed.stop() == {0: "exited"}


def test_a_stale_pid_file_never_names_another_process(bed: Testbed) -> None:
    pid_file = bed.processes.pid_file(0)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")  # this test process: not a replica
    assert bed.processes.pid(0) is None
    with pytest.raises(TestbedError, match="not running"):
        bed.processes.kill(0)
    with pytest.raises(TestbedError, match="no replica 3"):
        bed.processes.start(3)


async def test_a_replica_that_cannot_start_is_reported_with_its_log(bed: Testbed) -> None:
    config = bed.processes.config_file(0)
    config.write_text(config.read_text().replace("tick_ms = 10.0", "tick_ms = -1"))
    bed.processes.start(0)
    with trio.fail_after(30), pytest.raises(TestbedError) as info:
        await bed.wait_ready()
    assert "replica 0 is not running (exit status 2)" in str(info.value)
    assert "tick_ms" in str(info.value)

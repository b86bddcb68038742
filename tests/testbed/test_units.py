"""The testbed's pure parts: the load generator's disciplines and counts (against a fake client,
on a virtual clock), fault plans, and how statuses become the cluster's picture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from bft.client import NotCommitted, Rejected
from bft.node.config import load_replica_config
from bft.testbed import LoadResult, assess, drive, init_cluster, layout, load_cluster
from bft.testbed.faults import parse_groups, plan_byzantine, plan_cut, plan_link, plan_partition
from bft.testbed.load import open_loop, payload
from bft.testbed.processes import TestbedError


class FakeClient:
    """As ``Client.send``: settles after ``delay`` (virtual) seconds; refuses or times out on chosen
    payloads."""

    def __init__(self, delay: float = 0.05, max_inflight: int = 1000) -> None:
        self.delay = delay
        self.config = SimpleNamespace(max_inflight=max_inflight)
        self.outstanding = 0
        self.most_outstanding = 0
        self.started: list[float] = []
        self.tasks: set[trio.lowlevel.Task] = set()
        self.slots: trio.Semaphore | None = None

    async def send(self, data: bytes, on_done: Callable[[Any], object]) -> int:
        """As ``Client.send``: waits for one of ``max_inflight`` slots, not for the outcome."""
        if self.slots is None:
            self.slots = trio.Semaphore(self.config.max_inflight)
        await self.slots.acquire()
        self.started.append(trio.current_time())
        self.tasks.add(trio.lowlevel.current_task())
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        slots = self.slots

        async def settle() -> None:
            await trio.sleep(self.delay)
            self.outstanding -= 1
            slots.release()
            on_done(self.outcome(data))

        trio.lowlevel.spawn_system_task(settle)
        return len(self.started)

    @staticmethod
    def outcome(data: bytes) -> Any:
        index = int(data.split()[1])
        if index % 10 == 3:
            return Rejected(index, "too big")
        if index % 10 == 7:
            return NotCommitted(index, 1.0)
        return index


async def test_closed_loop_keeps_the_window_and_counts_outcomes(autojump_clock: Any) -> None:
    client = FakeClient()
    result = await drive(client, count=100, window=8, keep_receipts=True)  # type: ignore[arg-type]
    assert client.most_outstanding == 8
    assert (result.submitted, result.committed, result.refused, result.indeterminate) == (
        100,
        80,
        10,
        10,
    )
    assert result.errors == {"too big": 10}
    assert len(result.latencies) == 80 and len(result.receipts) == 80
    assert len(client.tasks) == 1  # one task sends them all: none per transaction
    # Each latency runs from its send to its outcome: the fake's delay, on the virtual clock.
    assert {round(x, 3) for x in result.latencies} == {0.05}


async def test_open_loop_submits_on_schedule_whatever_the_replies(autojump_clock: Any) -> None:
    client = FakeClient(delay=5.0)  # replies far slower than the rate: the rate still holds
    begin = trio.current_time()
    result = await drive(client, count=50, rate=100.0)  # type: ignore[arg-type]
    offsets = [t - begin for t in client.started]
    assert len(offsets) == 50
    assert all(abs(offset - i / 100) < 0.011 for i, offset in enumerate(offsets))
    assert client.most_outstanding == 50 and result.finished == 50


async def test_open_loop_backlog_waits_its_turn_in_order_and_counts_from_its_due_time(
    autojump_clock: Any,
) -> None:
    # The client takes 4 at a time, each for 1 s; 12 fall due in the first 0.12 s. The rest wait
    # for a slot and go in index order, and their latency includes the wait (they were due).
    client = FakeClient(delay=1.0, max_inflight=4)
    begin = trio.current_time()
    result = await drive(client, count=12, rate=100.0)  # type: ignore[arg-type]
    offsets = [round(t - begin, 3) for t in client.started]
    assert offsets == [0.0, 0.01, 0.02, 0.03, 1.0, 1.01, 1.02, 1.03, 2.0, 2.01, 2.02, 2.03]
    assert client.most_outstanding == 4
    assert len(client.tasks) == 1  # one task sends them all: the backlog waits in its send
    # Index 4 was due at 0.04, went at 1.0 and committed at 2.0: 1.96 s.
    committed = [i for i in range(12) if i % 10 not in (3, 7)]
    expected = {i: (1 + i // 4) + (i % 4) / 100 - i / 100 for i in committed}
    assert sorted(round(x, 3) for x in result.latencies) == sorted(
        round(v, 3) for v in expected.values()
    )


async def test_open_loop_stops_before_the_first_due_at_its_end(autojump_clock: Any) -> None:
    calls: list[tuple[int, float, float]] = []

    async def send(index: int, due: float) -> None:
        calls.append((index, round(due - begin, 3), round(trio.current_time() - begin, 3)))

    begin = trio.current_time()
    await open_loop(send, rate=10.0, until=begin + 0.3)
    assert calls == [(0, 0.0, 0.0), (1, 0.1, 0.1), (2, 0.2, 0.2)]
    # A start in the past: what fell due since goes at once, the rest on schedule.
    calls.clear()
    begin = trio.current_time()
    await open_loop(send, rate=10.0, start=begin - 0.25, until=begin + 0.1)
    assert calls == [(0, -0.25, 0.0), (1, -0.15, 0.0), (2, -0.05, 0.0), (3, 0.05, 0.05)]
    with pytest.raises(ValueError, match="rate"):
        await open_loop(send, rate=0.0, count=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": 0}, "rate"), ({"window": 0}, "window"), ({"rate": 5, "window": 5}, "not both")],
)
async def test_bad_load_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await drive(FakeClient(), count=1, **kwargs)  # type: ignore[arg-type]


def test_payloads_are_distinct_and_sized() -> None:
    assert len(payload(7, 256)) == 256 and payload(7, 256) != payload(8, 256)
    assert payload(123456, 4) == b"tx 123456 "  # never cut below its index


def test_percentiles_by_nearest_rank() -> None:
    result = LoadResult(count=100, latencies=[i / 1000 for i in range(1, 101)])
    assert result.percentile(50) == pytest.approx(50)
    assert result.percentile(99) == pytest.approx(99)
    assert LoadResult(count=0).summary()["p50_ms"] is None


def test_partition_groups() -> None:
    assert parse_groups("0,1/2,3", 4) == [[0, 1], [2, 3]]
    assert parse_groups(" 0 / 1,2 ", 4) == [[0], [1, 2]]
    for bad, words in [("0,1", "two groups"), ("0/5", "no replica 5"), ("0/x", "not a replica")]:
        with pytest.raises(TestbedError, match=words):
            parse_groups(bad, 4)
    plan = plan_partition([[0, 1], [2, 3]], 4)
    assert set(plan) == {0, 1, 2, 3}
    assert plan[2] == [("partition", {"groups": [[0, 1], [2, 3]]})]


def test_link_plans_reach_the_replica_and_its_peers() -> None:
    plan = plan_link("slow", 1, 4, 0.05)
    assert plan[1] == [("delay", {"seconds": 0.05})]
    assert plan[0] == [("delay", {"seconds": 0.05, "peers": [1]})]
    plan = plan_link("drop", 0, 3, 0.2)
    assert plan[2] == [("drop", {"probability": 0.2, "peers": [0]})]
    assert plan_cut(0, 2, 4) == {0: [("cut", {"peers": [2], "outbound": True, "inbound": False})]}
    assert plan_byzantine(3, "honest", 4) == {3: [("byzantine", {"mode": ""})]}
    with pytest.raises(TestbedError):
        plan_cut(1, 1, 4)
    with pytest.raises(TestbedError, match="no replica 4"):
        plan_byzantine(4, "silent", 4)


def status(height: int, leader: int | None, **extra: Any) -> dict[str, Any]:
    return {"height": height, "leader": leader, "role": "backup", "byzantine": "", **extra}


def test_assess_finds_the_leader_the_laggard_and_the_verdict(tmp_path: Path) -> None:
    init_cluster(tmp_path, protocol="pbft", n=4)
    cluster = load_cluster(tmp_path)
    view = assess(
        cluster, {0: status(100, 1), 1: status(100, 1), 2: status(80, 1), 3: status(99, 1)}
    )
    assert view.leader == 1 and view.leader_votes == 4 and view.height == 100
    assert [r.health for r in view.replicas] == ["ok", "ok", "behind", "ok"]
    assert view.verdict.startswith("degraded")
    view = assess(cluster, {0: status(5, 0), 1: None, 2: None, 3: status(5, 2, byzantine="silent")})
    assert view.verdict.startswith("NO QUORUM")
    assert [r.health for r in view.replicas][1:] == [
        "unreachable",
        "unreachable",
        "byzantine (silent)",
    ]
    assert view.notes  # they disagree on the leader


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    from bft.testbed.layout import _ephemeral_range, free_ports

    ports = free_ports(40)
    low, _ = _ephemeral_range()
    assert len(set(ports)) == 40
    assert all(10_000 <= p < low for p in ports)  # never a port an outgoing connection may hold


@pytest.mark.parametrize(
    ("given", "cores", "expected"),
    [(None, 2, False), (None, 8, True), (True, 2, True), (False, 64, False)],
)
def test_replicas_check_signatures_on_a_thread_only_with_cores_to_spare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: bool | None, cores: int, expected: bool
) -> None:
    monkeypatch.setattr(layout.os, "sched_getaffinity", lambda _pid: set(range(cores)))
    init_cluster(tmp_path, protocol="pbft", n=4, verify_on_thread=given)
    for i in range(4):
        assert load_replica_config(tmp_path / f"replica-{i}.toml").verify_on_thread is expected

"""Raft under the simulator: the scenarios of ../shared/TESTING.md (14: the five properties after
every step, repeated leader partitions) and bulk seeded fault runs.

Every run uses :class:`~tests.raft.properties.CheckedSimulation`, which checks the five Raft
properties after every simulated event, and ends with the simulator's own invariants (S1-S4,
L). A failure prints the seed: the report's description, or the property checker's message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from bft.protocols import spec
from bft.raft import AppendEntries, AppendReply, RaftConfig, VoteReply
from bft.sim import (
    CrashAt,
    CrashOnSend,
    DelayModel,
    NetworkModel,
    OneWayCut,
    PartitionWindow,
    Report,
    SimConfig,
    WorkloadConfig,
    groups_of,
)
from bft.sim.scenarios import random_scenario
from tests.conftest import seeds

from .properties import CheckedSimulation, check_run

RAFT = spec("raft")
MS = 1_000
SPREAD = WorkloadConfig(clients=3, requests_per_client=40, submit_every=40 * MS)
"""A workload that keeps submitting through the first ~1.6 s, across the faults."""


def check(report: Report) -> None:
    assert report.ok, report.describe()


def leader_at(config: SimConfig, at: int) -> int:
    """Who leads at ``at`` in a run of ``config`` (runs are replayable, so a second run with a
    fault scheduled at ``at`` is identical up to then)."""
    sim = CheckedSimulation(config)
    sim.run_until(at)
    leader = sim.leader()
    assert leader is not None, f"seed {config.seed}: no leader at {at}"
    return leader


# -------------------------------------------------------------------------------- fault-free


@pytest.mark.parametrize("n", [1, 3, 5, 7])
def test_normal_operation(n: int) -> None:
    report = check_run(SimConfig(spec=RAFT, n=n, seed=n, workload=SPREAD, encode_messages=True))
    check(report)
    assert report.stats["acked"] == 120 and report.stats["view_changes"] == 1


def test_requests_sent_to_one_replica_alone_reach_the_leader() -> None:
    """Every request goes to one replica chosen at random, and is never sent again: each one
    that does not reach the leader itself commits only because a replica relays it."""
    workload = WorkloadConfig(
        clients=3, requests_per_client=30, submit_every=20 * MS, alone=1.0, max_attempts=1
    )
    report = check_run(SimConfig(spec=RAFT, n=3, seed=11, workload=workload, encode_messages=True))
    check(report)
    assert report.stats["acked"] == 90


def test_normal_operation_with_real_ed25519_client_signatures() -> None:
    workload = WorkloadConfig(clients=2, requests_per_client=15, submit_every=20 * MS, signed=True)
    report = check_run(
        SimConfig(
            spec=RAFT,
            n=3,
            seed=3,
            workload=workload,
            real_crypto=True,
            encode_messages=True,
            core_config=RaftConfig(require_signatures=True),
        )
    )
    check(report)
    assert report.stats["acked"] == 30


def test_requests_that_arrive_while_the_pipeline_is_full_are_batched() -> None:
    burst = WorkloadConfig(clients=8, requests_per_client=60, max_inflight=16, submit_every=500)
    config = RaftConfig(max_uncommitted=1)
    sim = CheckedSimulation(SimConfig(spec=RAFT, n=3, seed=4, workload=burst, core_config=config))
    check(sim.run())
    ledger = sim.nodes[0].ledger
    assert sum(len(b.txs) for b in ledger) == 480 and len(ledger) < 240


# -------------------------------------------------------------------------------- crashes


def test_leader_crash_and_restart() -> None:
    base = SimConfig(spec=RAFT, n=3, seed=11, workload=SPREAD)
    leader = leader_at(base, 300 * MS)
    base.crashes = [CrashAt(leader, 300 * MS, 900 * MS)]
    sim = CheckedSimulation(base)
    report = sim.run()
    check(report)
    assert report.stats["crashes"] == 1 and len(sim.checker.leaders) >= 2


def test_leader_crash_without_restart_n5() -> None:
    base = SimConfig(spec=RAFT, n=5, seed=12, workload=SPREAD)
    first = leader_at(base, 250 * MS)
    base.crashes = [CrashAt(first, 250 * MS)]
    sim = CheckedSimulation(base)
    report = sim.run()
    check(report)
    assert max(sim.checker.leaders) >= 2 and sim.leader() != first


@pytest.mark.parametrize("seed", range(seeds(12)))
def test_crash_restart_at_random_points(seed: int) -> None:
    """Any replicas, several times each, even a majority at once: only what was persisted (the
    protocol log and the ledger) survives a crash. Safety throughout; liveness once all are up."""
    rng = random.Random(f"raft-crash/{seed}")
    n = rng.choice([3, 5])
    crashes = []
    for node in range(n):
        at = rng.randrange(20 * MS, 400 * MS)
        for _ in range(rng.randint(0, 3)):
            down = rng.randrange(10 * MS, 300 * MS)
            crashes.append(CrashAt(node, at, at + down))
            at += down + rng.randrange(20 * MS, 400 * MS)
    config = SimConfig(
        spec=RAFT,
        n=n,
        seed=seed,
        workload=SPREAD,
        crashes=crashes,
        network=NetworkModel(drop=0.02, lossy_until=2_000 * MS),
    )
    report = check_run(config)
    check(report)
    assert report.stats["crashes"] == len(crashes)


def granted_vote(message: object) -> bool:
    return isinstance(message, VoteReply) and message.granted and not message.pre


def acknowledged_entries(message: object) -> bool:
    return isinstance(message, AppendReply) and message.success and message.index > 0


def leader_sends_entries(message: object) -> bool:
    """A leader's new entries: sent before they are durable, so the crash loses them there."""
    return isinstance(message, AppendEntries) and bool(message.entries)


@pytest.mark.parametrize(
    ("name", "when"),
    [("vote", granted_vote), ("append", acknowledged_entries), ("entries", leader_sends_entries)],
)
def test_crash_right_after_sending(name: str, when: Callable[[object], bool]) -> None:
    """TESTING.md 13 for Raft: what was acknowledged (a vote, stored entries) was durable."""
    crashes = [CrashOnSend(node, when, restart_after=60 * MS) for node in range(3)]
    for seed in range(4):
        report = check_run(
            SimConfig(spec=RAFT, n=3, seed=seed, workload=SPREAD, crash_on_send=crashes)
        )
        check(report)
        assert report.stats["crashes"] >= 1, name


# -------------------------------------------------------------------------------- partitions


@pytest.mark.parametrize(("n", "seed"), [(5, 1), (5, 2), (3, 3)])
def test_repeated_leader_partitions(n: int, seed: int) -> None:
    """After hashicorp/raft's fuzzy partition test: ten times, cut the leader and some random
    others off (a minority), heal at a random time, and carry on; the workload runs throughout."""
    rng = random.Random(f"raft-fuzzy/{n}/{seed}")
    workload = WorkloadConfig(clients=3, requests_per_client=60, submit_every=60 * MS)
    config = SimConfig(spec=RAFT, n=n, seed=seed, workload=workload, duration=4_000 * MS)
    sim = CheckedSimulation(config)
    f = RAFT.faults(n)
    t = 200 * MS
    cut_off = []
    for _ in range(10):
        sim.run_until(t)
        leader = sim.leader()
        assert leader is not None, f"seed {seed}: no leader at {t}"
        others = [i for i in range(n) if i != leader]
        minority = {leader, *rng.sample(others, rng.randint(0, f - 1))}
        end = t + rng.randrange(150 * MS, 400 * MS)
        config.network.windows.append(
            PartitionWindow(t, end, groups_of([minority, set(range(n)) - minority]))
        )
        cut_off.append(leader)
        t = end + rng.randrange(50 * MS, 250 * MS)
    healed = max(sim.start(), t)
    sim.run_until(healed + config.settle, stop=sim._settled)
    report = sim.report(healed)
    check(report)
    assert len(sim.checker.leaders) >= 10  # every partition of a leader forced an election
    assert report.stats["acked"] == 180


def test_lossy_and_duplicating_network() -> None:
    network = NetworkModel(drop=0.2, duplicate=0.1, lossy_until=2_000 * MS)
    for seed in range(3):
        report = check_run(SimConfig(spec=RAFT, n=3, seed=seed, workload=SPREAD, network=network))
        check(report)
        assert report.stats["dropped"] > 100


def test_a_replica_that_can_send_but_not_receive_cannot_disrupt() -> None:
    """TESTING.md 10: its pre-votes meet live leader leases; the rest keep committing."""
    base = SimConfig(spec=RAFT, n=3, seed=21, workload=SPREAD)
    leader = leader_at(base, 200 * MS)
    deaf = (leader + 1) % 3
    base.network = NetworkModel(
        cuts=[OneWayCut(i, deaf, 200 * MS, 1_500 * MS) for i in range(3) if i != deaf]
    )
    sim = CheckedSimulation(base)
    report = sim.run()
    check(report)
    assert sim.nodes[deaf].core.pre_votes > 3  # it kept trying
    assert list(sim.checker.leaders) == [1] and sim.leader() == leader  # one term, one leader


@pytest.mark.parametrize("direction", ["to-follower", "from-follower"])
def test_one_way_link_between_leader_and_a_follower(direction: str) -> None:
    base = SimConfig(spec=RAFT, n=3, seed=22, workload=SPREAD)
    leader = leader_at(base, 200 * MS)
    other = (leader + 1) % 3
    src, dst = (leader, other) if direction == "to-follower" else (other, leader)
    base.network = NetworkModel(cuts=[OneWayCut(src, dst, 200 * MS, 1_500 * MS)])
    sim = CheckedSimulation(base)
    report = sim.run()
    check(report)
    assert len(sim.checker.leaders) == 1


def test_a_follower_far_behind_catches_up_from_the_ledger() -> None:
    base = SimConfig(spec=RAFT, n=3, seed=23, workload=SPREAD, core_config=RaftConfig(log_retain=4))
    leader = leader_at(base, 250 * MS)
    lagging = (leader + 1) % 3
    rest = [i for i in range(3) if i != lagging]
    base.network = NetworkModel(
        windows=[PartitionWindow(250 * MS, 1_200 * MS, groups_of([[lagging], rest]))]
    )
    sim = CheckedSimulation(base)
    check(sim.run())
    assert sim.nodes[lagging].core.status().extra["blocks_fetched"] > 4
    assert sim.nodes[lagging].ledger == sim.nodes[leader].ledger


# -------------------------------------------------------------------------------- bulk random scenarios


def sweep(n: int, count: int, config: RaftConfig | None, sim_figures, suite: str) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    elections = 0
    for seed in range(count):
        report = check_run(random_scenario(RAFT, n, seed, core_config=config))
        check(report)
        elections += report.stats["view_changes"]
    sim_figures(suite, count, time.perf_counter() - started)
    assert elections > count  # the faults did force elections


@pytest.mark.parametrize("n", [3, 5])
def test_random_scenarios(n: int, sim_figures) -> None:  # type: ignore[no-untyped-def]
    sweep(n, seeds(200 if n == 3 else 100), None, sim_figures, f"raft random n={n}")


def test_random_scenarios_with_tight_windows(sim_figures) -> None:  # type: ignore[no-untyped-def]
    """Small messages, windows and retention: every path (probing, stalls, fetching blocks,
    log compaction) runs often."""
    tight = RaftConfig(
        log_retain=1,
        wal_compact_records=16,
        max_inflight=2,
        max_uncommitted=4,
        max_entries_per_message=2,
        stall_ticks=3,
    )
    sweep(3, seeds(60), tight, sim_figures, "raft random n=3, tight windows")


def chaos_scenario(n: int, seed: int) -> SimConfig:
    """Beyond the fault model for a while: up to three-way partitions, many one-way cuts, heavy
    loss, and crashes of any replicas (a majority at once, too), all healed by the end. Safety
    must hold throughout, and liveness once everything is back. The Raft settings are drawn too,
    small windows and retention included."""
    rng = random.Random(f"raft-chaos/{n}/{seed}")
    duration = 2_000 * MS
    network = NetworkModel(
        delay=DelayModel(
            base=rng.choice([200, 1_000, 3_000]), jitter=rng.choice([0, 1_000, 10_000])
        ),
        drop=rng.choice([0.0, 0.05, 0.2, 0.4]),
        duplicate=rng.choice([0.0, 0.1]),
        lossy_until=duration,
    )
    for _ in range(rng.randint(0, 6)):
        start = rng.randrange(0, duration - 100 * MS)
        members = list(range(n))
        rng.shuffle(members)
        cuts = sorted(rng.sample(range(1, n), min(rng.randint(1, 3), n - 1)))
        parts = [members[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
        end = min(duration, start + rng.randrange(30 * MS, 600 * MS))
        network.windows.append(PartitionWindow(start, end, groups_of(parts)))
    for _ in range(rng.randint(0, 4)):
        a, b = rng.sample(range(n), 2)
        start = rng.randrange(0, duration)
        network.cuts.append(
            OneWayCut(a, b, start, min(duration, start + rng.randrange(50 * MS, 1_000 * MS)))
        )
    crashes = []
    for node in range(n):
        at = rng.randrange(0, duration)
        while at < duration and rng.random() < 0.6:
            down = rng.randrange(5 * MS, 500 * MS)
            crashes.append(CrashAt(node, at, at + down))
            at += down + rng.randrange(5 * MS, 600 * MS)
    election = rng.choice([4, 10])
    config = RaftConfig(
        election_ticks=election,
        heartbeat_ticks=rng.randint(1, min(3, election - 1)),
        log_retain=rng.choice([0, 1, 3, 256]),
        wal_compact_records=rng.choice([8, 16, 4096]),
        max_inflight=rng.randint(1, 8),
        max_uncommitted=rng.randint(1, 16),
        max_entries_per_message=rng.randint(1, 64),
        stall_ticks=rng.randint(2, 6),
        fetch_timeout=rng.choice([3, 20]),
    )
    workload = WorkloadConfig(
        clients=rng.randint(1, 5),
        requests_per_client=rng.randint(5, 40),
        max_inflight=rng.randint(1, 8),
        submit_every=rng.choice([2 * MS, 20 * MS, 60 * MS]),
    )
    return SimConfig(
        spec=RAFT,
        n=n,
        seed=seed,
        duration=duration,
        network=network,
        crashes=crashes,
        workload=workload,
        core_config=config,
    )


@pytest.mark.parametrize("n", [3, 5])
def test_chaos_beyond_the_fault_model_then_healed(n: int, sim_figures) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    count = seeds(40)
    for seed in range(count):
        check(check_run(chaos_scenario(n, seed)))
    sim_figures(f"raft chaos n={n}", count, time.perf_counter() - started)


# -------------------------------------------------------------------------------- regressions


def test_regression_follower_behind_the_leaders_compaction_with_a_full_log() -> None:
    """random_scenario(raft, 5, seed 2) with ``log_retain=0``: a follower held every entry
    (match = the leader's last index) but had not applied three of them, whose acknowledgement
    bitmaps the leader had compacted away with the entries. The leader only sent fetch hints
    when it had entries to send, so the follower never converged (L). Now a heartbeat sends a
    follower that has not applied what the leader compacted to fetch the certified blocks."""
    tight = RaftConfig(
        log_retain=0,
        wal_compact_records=16,
        max_inflight=2,
        max_uncommitted=4,
        max_entries_per_message=2,
        stall_ticks=3,
    )
    check(check_run(random_scenario(RAFT, 5, 2, core_config=tight)))

"""PBFT under the simulator: the scenarios of ../shared/TESTING.md and bulk seeded fault runs.

Every failure prints the report: the seed, the violated invariant and the last events.
"""

from __future__ import annotations

import time

import pytest

from bft.pbft import PbftConfig
from bft.pbft.messages import Prepare, ViewChange
from bft.protocols import spec
from bft.sim import (
    CrashAt,
    CrashOnSend,
    NetworkModel,
    OneWayCut,
    PartitionWindow,
    SimConfig,
    Simulation,
    WorkloadConfig,
    groups_of,
    run,
    scenarios,
)
from bft.sim.scenarios import random_scenario
from tests.conftest import seeds

PBFT = spec("pbft")
MS = 1_000
SPREAD = WorkloadConfig(clients=3, requests_per_client=40, submit_every=40 * MS)
"""A workload that keeps submitting through the first ~1.6 s, across the faults."""


def check(report) -> None:  # type: ignore[no-untyped-def]
    assert report.ok, report.describe()


@pytest.mark.parametrize("n", [4, 7, 10])
def test_normal_operation(n: int) -> None:
    report = run(SimConfig(spec=PBFT, n=n, seed=n, workload=SPREAD, encode_messages=True))
    check(report)
    assert report.stats["acked"] == 120 and report.stats["view_changes"] == 0


def test_requests_sent_to_one_replica_alone_reach_the_primary() -> None:
    """Every request goes to one replica chosen at random, and is never sent again: each one
    that does not reach the primary itself commits only because a replica relays it."""
    workload = WorkloadConfig(
        clients=3, requests_per_client=30, submit_every=20 * MS, alone=1.0, max_attempts=1
    )
    report = run(SimConfig(spec=PBFT, n=4, seed=11, workload=workload, encode_messages=True))
    check(report)
    assert report.stats["acked"] == 90


def test_normal_operation_with_real_ed25519_and_client_signatures() -> None:
    workload = WorkloadConfig(clients=2, requests_per_client=15, submit_every=20 * MS, signed=True)
    report = run(
        SimConfig(
            spec=PBFT,
            n=4,
            seed=3,
            workload=workload,
            real_crypto=True,
            encode_messages=True,
            core_config=PbftConfig(require_signatures=True),
        )
    )
    check(report)
    assert report.stats["acked"] == 30


def test_crashed_primary_costs_one_view_change() -> None:
    report = run(SimConfig(spec=PBFT, n=4, seed=5, workload=SPREAD, crashes=[CrashAt(0, 300 * MS)]))
    check(report)
    assert report.stats["view_changes"] >= 1 and report.stats["max_view"] == 1


def test_silent_primary() -> None:
    report = run(SimConfig(spec=PBFT, n=4, seed=6, workload=SPREAD, silent=frozenset({0})))
    check(report)
    assert report.stats["max_view"] >= 1


def test_silent_backup_changes_nothing() -> None:
    report = run(SimConfig(spec=PBFT, n=4, seed=7, workload=SPREAD, silent=frozenset({2})))
    check(report)
    assert report.stats["view_changes"] == 0


def test_equivocating_primary_twin_and_the_evidence_it_leaves() -> None:
    """Scenario 6: two proposals for one (view, seq) to two halves: at most one commits, and the
    conflicting signed pre-prepares are kept as evidence."""
    # Twin instances 0 and 4 are both replica 0, the primary: one reaches {1, 2}, the other
    # {1, 3}; replica 1 hears both.
    cuts = [OneWayCut(0, 3, 0, 800 * MS), OneWayCut(4, 2, 0, 800 * MS)]
    sim = Simulation(
        SimConfig(spec=PBFT, n=4, seed=8, twins=1, network=NetworkModel(cuts=cuts), workload=SPREAD)
    )
    report = sim.run()
    check(report)
    witness = sim.nodes[1].core
    assert witness.evidence_total > 0, "the twin's conflicting pre-prepares should have been seen"
    first, second = witness.evidence[0]
    assert (first.view, first.seq) == (second.view, second.seq)
    assert first.proposal.digest() != second.proposal.digest()


def test_two_faulty_leaders_in_a_row() -> None:
    """Scenario 9: n = 7, f = 2, the primaries of views 0 and 1 are both silent."""
    report = run(SimConfig(spec=PBFT, n=7, seed=9, workload=SPREAD, silent=frozenset({0, 1})))
    check(report)
    assert report.stats["max_view"] >= 2


def test_partition_that_heals() -> None:
    network = NetworkModel(
        windows=[PartitionWindow(200 * MS, 1_200 * MS, groups_of([[0, 1], [2, 3]]))]
    )
    report = run(SimConfig(spec=PBFT, n=4, seed=10, network=network, workload=SPREAD))
    check(report)
    assert report.stats["dropped"] > 0


def test_asymmetric_partition_cannot_drive_view_changes_alone() -> None:
    """Scenario 10: replica 3 sends but receives nothing; the others keep committing in view 0."""
    cuts = [OneWayCut(src, 3, 0, 1_500 * MS) for src in (0, 1, 2)]
    sim = Simulation(
        SimConfig(spec=PBFT, n=4, seed=11, network=NetworkModel(cuts=cuts), workload=SPREAD)
    )
    sim.run_until(1_400 * MS)
    for node in sim.nodes[:3]:
        assert node.core.view == 0, "a replica that cannot hear must not move the others"
    assert len(sim.nodes[0].ledger) > 20
    assert sim.nodes[3].core.view > 0, "it suspected the primary on its own"
    report = sim.run()
    check(report)


def test_slow_replica_beyond_the_watermarks_catches_up_by_state_transfer() -> None:
    """Scenario 11: the fast replicas never stall at the high watermark; the slow one catches
    up by fetching certified blocks, and its log stays bounded meanwhile."""
    cfg = PbftConfig(checkpoint_interval=4, window=8, max_inflight=4)
    windows = [PartitionWindow(100 * MS, 1_300 * MS, groups_of([[0, 1, 2], [3]]))]
    sim = Simulation(
        SimConfig(
            spec=PBFT,
            n=4,
            seed=12,
            network=NetworkModel(windows=windows),
            workload=SPREAD,
            core_config=cfg,
        )
    )
    sim.run_until(1_250 * MS)
    fast = len(sim.nodes[0].ledger)
    assert fast > 3 * cfg.window, "the fast replicas moved far past the slow one's high watermark"
    slow = sim.nodes[3].core
    assert len(slow.slots) <= cfg.window and len(slow.mempool) <= 120
    report = sim.run()
    check(report)
    assert len(sim.nodes[3].ledger) == len(sim.nodes[0].ledger)


def test_crash_right_after_voting_and_restart() -> None:
    """Scenario 13 in the simulator: a backup crashes right after its first prepare leaves,
    while the primary equivocates; after the restart it casts no conflicting vote."""
    crash = CrashOnSend(node=1, when=lambda m: isinstance(m, Prepare), restart_after=50 * MS)
    network = NetworkModel(
        windows=[PartitionWindow(0, 600 * MS, groups_of([[0, 1, 2], [4, 1, 3]]))]
    )
    sim = Simulation(
        SimConfig(
            spec=PBFT,
            n=4,
            seed=13,
            twins=1,
            network=network,
            crash_on_send=[crash],
            workload=SPREAD,
        )
    )
    report = sim.run()
    check(report)
    assert report.stats["crashes"] == 1 and report.stats["restarts"] == 1


def test_view_change_under_loss_and_duplication() -> None:
    network = NetworkModel(drop=0.1, duplicate=0.1, lossy_until=1_500 * MS)
    report = run(
        SimConfig(
            spec=PBFT,
            n=4,
            seed=14,
            network=network,
            crashes=[CrashAt(0, 500 * MS)],
            workload=SPREAD,
        )
    )
    check(report)


def test_crash_and_restart_of_every_replica_in_turn() -> None:
    crashes = [CrashAt(i, (200 + 300 * i) * MS, (350 + 300 * i) * MS) for i in range(4)]
    report = run(SimConfig(spec=PBFT, n=4, seed=15, workload=SPREAD, crashes=crashes))
    check(report)
    assert report.stats["restarts"] == 4


def test_runs_are_reproducible_from_the_seed() -> None:
    config = random_scenario(PBFT, 4, 77)
    first, second = run(config), run(random_scenario(PBFT, 4, 77))
    assert first.stats == second.stats and first.trace == second.trace


# ------------------------------------------------------------------------------------ Twins


def twins_config(n: int, twins: int, seed: int, **cfg: object) -> SimConfig:
    """Per-round partitions and leaders sampled uniformly over all partitions (six views)."""
    return scenarios.twins_config(PBFT, seed, n=n, twins=twins, space="all", **cfg)[1]


def test_twins_with_f_twins_never_fork(sim_figures) -> None:  # type: ignore[no-untyped-def]
    """Scenario 1: n = 4 with one twin; per-round partitions and leaders sampled uniformly."""
    count = seeds(1000)
    started = time.perf_counter()
    for seed in range(count):
        report = run(twins_config(4, 1, seed))
        assert report.ok, report.describe()
    sim_figures("pbft twins n=4 (f twins)", count, time.perf_counter() - started)


def test_negative_control_more_than_f_twins_is_caught() -> None:
    """Scenario 2: with f+1 twins the checker must report conflicting commits."""
    caught = [seed for seed in range(150) if not run(twins_config(4, 2, seed)).ok]
    assert len(caught) >= 3, "a harness that can never fail proves nothing"


def test_negative_control_an_unsafe_quorum_is_caught() -> None:
    """Deciding on f+1 votes instead of a Byzantine quorum must be reported, with f twins."""
    caught = []
    for seed in range(150):
        report = run(twins_config(4, 1, seed, unsafe_quorum=2))
        if not report.ok:
            caught.append(report)
    assert len(caught) >= 3
    assert any(v.invariant in ("S1", "S2") for r in caught for v in r.violations)


# ------------------------------------------------------------------------------ bulk faults


@pytest.mark.parametrize("n,count", [(4, 300), (7, 50), (10, 15)])
def test_random_faults(n: int, count: int, sim_figures) -> None:  # type: ignore[no-untyped-def]
    """Seeded random mixes of loss, duplication, jitter, partitions, one-way cuts, crashes with
    restarts, twins and silent replicas; S1-S4 always, liveness when within the fault model."""
    count = seeds(count)
    started = time.perf_counter()
    for seed in range(count):
        report = run(random_scenario(PBFT, n, seed))
        assert report.ok, report.describe()
    sim_figures(f"pbft random faults n={n}", count, time.perf_counter() - started)


def test_random_faults_with_real_ed25519(sim_figures) -> None:  # type: ignore[no-untyped-def]
    count = seeds(12)
    started = time.perf_counter()
    for seed in range(count):
        report = run(random_scenario(PBFT, 4, 10_000 + seed, real_crypto=True))
        assert report.ok, report.describe()
    sim_figures("pbft random faults n=4, real Ed25519", count, time.perf_counter() - started)


@pytest.mark.soak
def test_soak_random_faults(sim_figures) -> None:  # type: ignore[no-untyped-def]
    count = seeds(20_000)
    started = time.perf_counter()
    for seed in range(100_000, 100_000 + count):
        report = run(random_scenario(PBFT, 4 if seed % 3 else 7, seed))
        assert report.ok, report.describe()
    sim_figures("pbft soak", count, time.perf_counter() - started)


@pytest.mark.soak
def test_soak_twins(sim_figures) -> None:  # type: ignore[no-untyped-def]
    count = seeds(100_000)
    started = time.perf_counter()
    for seed in range(1_000_000, 1_000_000 + count):
        report = run(twins_config(4, 1, seed))
        assert report.ok, report.describe()
    sim_figures("pbft twins soak", count, time.perf_counter() - started)


def test_view_change_messages_carry_the_prepared_requests() -> None:
    """In a real run, the view change of a replica that prepared something reports it."""
    seen: list[ViewChange] = []
    sim = Simulation(
        SimConfig(spec=PBFT, n=4, seed=21, workload=SPREAD, crashes=[CrashAt(0, 300 * MS)])
    )
    original = sim._send

    def spy(node, to, message):  # type: ignore[no-untyped-def]
        if isinstance(message, ViewChange):
            seen.append(message)
        original(node, to, message)

    sim._send = spy  # type: ignore[method-assign]
    check(sim.run())
    assert seen and all(vc.new_view >= 1 for vc in seen)

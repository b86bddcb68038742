"""The simulator itself: the network model, the invariant checkers, Twins sampling, crashes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bft.cli import main
from bft.protocols import spec
from bft.sim import (
    CrashAt,
    DelayModel,
    NetworkModel,
    OneWayCut,
    PartitionWindow,
    SimConfig,
    Simulation,
    WorkloadConfig,
    groups_of,
    run,
    sample_scenario,
    set_partitions,
)
from bft.sim.invariants import (
    check_agreement,
    check_durability,
    check_integrity,
    check_liveness,
    check_validity,
)
from bft.sim.scenarios import parse_faults
from bft.sim.workload import Workload
from ledger import Block, genesis_hash, make_header
from tests.ledger.chain import CHAIN, COMMITTEE, build_chain, certify

PBFT = spec("pbft")


# ------------------------------------------------------------------------------ the network model


def test_partitions_cuts_and_loss() -> None:
    rng = random.Random(1)
    net = NetworkModel(
        windows=[PartitionWindow(100, 200, groups_of([[0, 1], [2, 3]]))],
        cuts=[OneWayCut(0, 3, 0, 1_000)],
        round_partitions={5: groups_of([[0], [1, 2, 3]])},
    )
    assert net.deliveries(rng, 150, 0, 2, None) == ()
    assert net.deliveries(rng, 150, 0, 1, None)
    assert net.deliveries(rng, 250, 0, 2, None)
    assert net.deliveries(rng, 500, 0, 3, None) == () and net.deliveries(rng, 500, 3, 0, None)
    assert net.deliveries(rng, 500, 0, 1, 5) == () and net.deliveries(rng, 500, 0, 1, 6)
    lossy = NetworkModel(drop=0.5, duplicate=0.5, lossy_until=1_000)
    outcomes = Counter(len(lossy.deliveries(rng, 10, 0, 1, None)) for _ in range(2_000))
    assert outcomes[0] > 800 and outcomes[2] > 300 and outcomes[1] > 300
    assert all(len(lossy.deliveries(rng, 2_000, 0, 1, None)) == 1 for _ in range(100)), "healed"


def test_delays_reorder_messages() -> None:
    rng = random.Random(2)
    delays = [DelayModel(base=100, jitter=500).sample(rng) for _ in range(200)]
    assert min(delays) >= 100 and len(set(delays)) > 50


def test_set_partitions_are_all_there() -> None:
    for m in range(1, 7):
        parts = set_partitions(list(range(m)), 2)
        assert len(parts) == 2 ** (m - 1)
        assert len({tuple(sorted(tuple(sorted(g)) for g in p)) for p in parts}) == len(parts)
    assert len(set_partitions(list(range(5)), 5)) == 52  # Bell number B5


def test_twins_sampling_is_uniform_over_the_space() -> None:
    """Every (partition, leader) choice of a round is equally likely: not a prefix."""
    rng = random.Random(3)
    counts: Counter[tuple[object, int]] = Counter()
    draws = 16_000
    for _ in range(draws):
        scenario = sample_scenario(rng, instances=5, identities=4, rounds=1)
        counts[(scenario.partitions[0], scenario.leaders[0])] += 1
    space = 16 * 4
    assert len(counts) == space
    expected = draws / space
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 120, f"chi-square {chi2:.0f} over {space - 1} degrees of freedom"


# ------------------------------------------------------------------------------ the checkers catch


def test_agreement_checker_catches_a_fork() -> None:
    a = build_chain(3, seed=1)
    b = a[:1] + build_chain(2, start_height=2, prev_hash=a[0].hash(), seed=9)
    assert not check_agreement({0: a, 1: a[:2]})
    (violation,) = check_agreement({0: a, 1: b})
    assert violation.invariant == "S1" and "height 2" in violation.detail


def test_integrity_checker_catches_a_bad_certificate_and_a_broken_link() -> None:
    chain = build_chain(3)
    assert not check_integrity(0, chain, COMMITTEE)
    weak = Block(
        header=chain[1].header,
        txs=chain[1].txs,
        certificate=certify(chain[1].header, signers=(0, 1)),
    )
    assert check_integrity(0, [chain[0], weak, chain[2]], COMMITTEE)[0].invariant == "S2"
    assert check_integrity(0, [chain[0], chain[2]], COMMITTEE)


def _workload_with(raws: list[bytes]) -> Workload:
    wl = Workload(WorkloadConfig(), random.Random(1), CHAIN, ack_quorum=2)
    wl.sent_raw.update(raws)
    return wl


def test_durability_checker_catches_a_duplicate_and_a_lost_acknowledged_request() -> None:
    from bft.core.ready import Reply
    from bft.core.requests import Request
    from bft.sim.workload import Submission

    chain = build_chain(2, txs_per_block=2)
    raw = chain[0].txs[0]
    dup_header = make_header(
        chain_id=CHAIN,
        height=3,
        prev_hash=chain[1].hash(),
        txs=[raw],
        protocol="pbft",
        view=0,
        proposer=0,
    )
    dup = Block(header=dup_header, txs=(raw,), certificate=certify(dup_header))
    wl = _workload_with([t for b in chain for t in b.txs])
    (violation,) = check_durability({0: chain + [dup]}, wl)
    assert violation.invariant == "S3" and "twice" in violation.detail
    request = Request.from_raw(chain[1].txs[1])
    wl.submissions[request.id] = Submission(request, 0, 0, 0)
    for replica in (0, 1):
        wl.on_reply(replica, Reply(request.client, request.seq, 1, 0), 5)  # told the wrong place
    (violation,) = check_durability({0: chain}, wl)
    assert violation.invariant == "S3" and "acknowledged" in violation.detail


def test_validity_checker_catches_a_transaction_nobody_sent() -> None:
    chain = build_chain(1, txs_per_block=3)
    wl = _workload_with(list(chain[0].txs[:2]))
    (violation,) = check_validity({0: chain}, wl, CHAIN, signatures=False)
    assert violation.invariant == "S4"


def test_liveness_checker() -> None:
    wl = _workload_with([])
    assert not check_liveness({0: 5, 1: 5}, wl, 0, 10)
    assert check_liveness({0: 5, 1: 4}, wl, 0, 10)[0].invariant == "L"


# ------------------------------------------------------------------------------ crashes and replay


def test_a_crash_keeps_only_what_was_persisted() -> None:
    sim = Simulation(SimConfig(spec=PBFT, n=4, seed=4, crashes=[CrashAt(2, 300_000, 700_000)]))
    sim.run_until(299_000)
    before = list(sim.nodes[2].wal)
    sim.run_until(300_000)
    node = sim.nodes[2]
    assert not node.alive and node.core is None
    assert node.wal == before or len(node.wal) >= len(before)
    sim.run_until(700_000)
    assert node.alive and node.core is not None
    report = sim.run()
    assert report.ok, report.describe()
    assert report.stats["restarts"] == 1


def test_same_seed_same_run_other_seed_other_run() -> None:
    def once(seed: int):  # type: ignore[no-untyped-def]
        net = NetworkModel(
            drop=0.05, delay=DelayModel(base=300, jitter=2_000), lossy_until=1_000_000
        )
        return run(SimConfig(spec=PBFT, n=4, seed=seed, network=net))

    a, b, c = once(5), once(5), once(6)
    assert a.stats == b.stats and a.trace == b.trace
    assert a.trace != c.trace


def test_parse_faults() -> None:
    config = parse_faults(
        "drop=0.1,dup=0.05,delay=200:900,crash=2@300:900,partition=0.1|2.3@100:500,cut=1>3@0:50,silent=3",
        SimConfig(spec=PBFT, n=4),
    )
    assert config.network.drop == 0.1 and config.network.duplicate == 0.05
    assert config.crashes == [CrashAt(2, 300_000, 900_000)]
    assert config.network.windows[0].groups == groups_of([[0, 1], [2, 3]])
    assert config.network.cuts[0] == OneWayCut(1, 3, 0, 50_000)
    assert config.silent == frozenset({3}) and config.check_liveness
    assert not parse_faults("twins=2", SimConfig(spec=PBFT, n=4)).check_liveness
    with pytest.raises(ValueError, match="expected crash=R@MS"):
        parse_faults("crash=x", SimConfig(spec=PBFT, n=4))
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("flood=1", SimConfig(spec=PBFT, n=4))


# ------------------------------------------------------------------------------ bft sim


def test_bft_sim_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "sim",
            "--protocol",
            "pbft",
            "--n",
            "4",
            "--faults",
            "crash=0@300:900,drop=0.05",
            "--seed",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for word in ("S1 agreement", "S4 validity", "L liveness", "view changes", "held"):
        assert word in out


def test_bft_sim_reports_violations_with_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "--faults", "twins=2", "--seed", "2", "--count", "2", "--rounds", "60"])
    out = capsys.readouterr().out
    assert code == 1
    # Twins beyond f break agreement in some schedules (a negative control); which of the two
    # seeds does depends on the protocol's timing, so any reported seed must be one of them.
    import re

    seeds = {int(s) for s in re.findall(r"seed=(\d+): \d+ VIOLATION", out)}
    assert "VIOLATED" in out and seeds and seeds <= {2, 3} and "replay: seed" in out


def test_bft_sim_json_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["sim", "--json", "--count", "2", "--rounds", "50", "--requests", "5"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in reports] == [1, 2] and all(r["ok"] for r in reports)
    assert main(["sim", "--faults", "crash=oops"]) == 2
    assert "expected crash=R@MS" in capsys.readouterr().err
    assert main(["sim", "--protocol", "pbft", "--n", "0"]) == 2
    assert main(["sim", "--n", "1", "--rounds", "50", "--requests", "5"]) == 0  # f = 0 works


def test_genesis_linkage_in_the_simulated_ledger() -> None:
    sim = Simulation(SimConfig(spec=PBFT, n=4, seed=1))
    sim.run()
    assert sim.nodes[0].ledger[0].header.prev_hash == genesis_hash(sim.config.chain_id)

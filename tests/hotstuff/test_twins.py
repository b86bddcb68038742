"""Twins (Bano et al., "Twins: BFT Systems Made Robust"): a committee of four plus twins that
share a replica's key, under per-round partitions and leaders drawn uniformly at random.

Round ``r`` of a scenario is view ``r + 1`` (view 0 is the genesis QC's): its partition applies
to every message of that view (``round_of`` is the view), and its leader is set through
``HotStuffConfig.leaders``. Views after the schedule are fully connected, with round-robin
leaders, so the scenario can also commit afterwards.

Two samplers, both uniform over their space: ``sample_scenario`` over all partitions into at
most two groups, and the same restricted (by rejection) to the partitions that leave some group
with a quorum of identities: a round without one can never finish (its messages are dropped
forever), so later rounds are never reached, and the restricted space reaches deeper.

With at most f twins, S1 (and every other safety invariant) must hold in every scenario; a
share runs with real Ed25519. The negative control gives two of the four replicas a twin (more
than f): the checker must report conflicting commits in some scenarios.
"""

from __future__ import annotations

import random
import time

import pytest

from bft.hotstuff import HotStuffConfig
from bft.protocols import spec
from bft.sim import NetworkModel, Report, SimConfig, WorkloadConfig, run, sample_scenario
from bft.sim.network import Groups, groups_of
from bft.sim.twins import TwinsScenario, set_partitions

SPEC = spec("hotstuff")
N = 4
QUORUM = 3
ROUNDS = 7
MS = 1_000


def identities(group: frozenset[int]) -> set[int]:
    return {i % N for i in group}


def has_quorum(groups: Groups) -> bool:
    return any(len(identities(g)) >= QUORUM for g in groups)


def sample_live(rng: random.Random, twins: int, rounds: int = ROUNDS) -> TwinsScenario:
    """Uniform over per-round partitions that leave a group with a quorum, and leaders."""
    scenario = sample_scenario(rng, N + twins, N, rounds)
    partitions = list(scenario.partitions)
    for r, groups in enumerate(partitions):
        while not has_quorum(groups):
            groups = sample_scenario(rng, N + twins, N, 1).partitions[0]
        partitions[r] = groups
    return TwinsScenario(tuple(partitions), scenario.leaders)


def config(
    scenario: TwinsScenario, seed: int, twins: int, *, real_crypto: bool = False
) -> SimConfig:
    network = NetworkModel(
        round_partitions={r + 1: groups for r, groups in enumerate(scenario.partitions)}
    )
    core = HotStuffConfig(
        leaders={r + 1: leader for r, leader in enumerate(scenario.leaders)},
        view_timeout=3,
        retransmit_interval=2,
        status_interval=6,
    )
    return SimConfig(
        spec=SPEC,
        n=N,
        seed=seed,
        twins=twins,
        network=network,
        core_config=core,
        duration=100 * MS,
        settle=250 * MS,
        check_liveness=False,
        real_crypto=real_crypto,
        workload=WorkloadConfig(
            clients=1, requests_per_client=3, max_inflight=2, submit_every=15 * MS
        ),
    )


def run_scenarios(
    label: str, seeds: range, make: object, *, twins: int, real_crypto: bool = False
) -> list[tuple[TwinsScenario, Report]]:
    started = time.perf_counter()
    out = []
    for seed in seeds:
        rng = random.Random(f"hotstuff-twins/{label}/{seed}")
        scenario = make(rng, twins)  # type: ignore[operator]
        out.append((scenario, run(config(scenario, seed, twins, real_crypto=real_crypto))))
    elapsed = time.perf_counter() - started
    rate = len(seeds) / elapsed * 60
    heights = [r.stats["height"] for _, r in out]
    print(
        f"twins {label}: {len(seeds)} scenarios in {elapsed:.1f}s = {rate:.0f} scenarios/min; "
        f"mean height {sum(heights) / len(heights):.1f}, {heights.count(0)} without a commit"
    )
    return out


def uniform(rng: random.Random, twins: int) -> TwinsScenario:
    return sample_scenario(rng, N + twins, N, ROUNDS)


def failures(results: list[tuple[TwinsScenario, Report]]) -> str:
    return "\n\n".join(
        f"{scenario.describe()}\n{report.describe()}"
        for scenario, report in results
        if not report.ok
    )


CHUNK = 100


@pytest.mark.parametrize("chunk", range(15))
def test_twins_live_partitions_keep_agreement(chunk: int) -> None:
    results = run_scenarios("live", range(chunk * CHUNK, (chunk + 1) * CHUNK), sample_live, twins=1)
    assert not failures(results), failures(results)
    assert sum(1 for _, r in results if r.stats["height"] > 0) >= CHUNK * 0.8


@pytest.mark.parametrize("chunk", range(4))
def test_twins_uniform_partitions_keep_agreement(chunk: int) -> None:
    results = run_scenarios("uniform", range(chunk * CHUNK, (chunk + 1) * CHUNK), uniform, twins=1)
    assert not failures(results), failures(results)
    assert any(r.stats["height"] > 0 for _, r in results)


def test_twins_with_real_signatures() -> None:
    results = run_scenarios("real", range(40), sample_live, twins=1, real_crypto=True)
    assert not failures(results), failures(results)
    assert sum(1 for _, r in results if r.stats["height"] > 0) >= 30


TWO_QUORUMS = [
    groups_of(p)
    for p in set_partitions(list(range(N + 2)), 2)
    if len(p) == 2 and all(len(identities(frozenset(g))) >= QUORUM for g in p)
]


def two_quorums(rng: random.Random, twins: int) -> TwinsScenario:
    """A partition drawn uniformly from those in which both groups hold a quorum (possible only
    with more than f twins), kept for the whole schedule; leaders uniform per round."""
    split = rng.choice(TWO_QUORUMS)
    leaders = tuple(rng.randrange(N) for _ in range(10))
    return TwinsScenario(tuple(split for _ in leaders), leaders)


def test_negative_control_more_than_f_twins_is_caught() -> None:
    """Two twins among four replicas (f = 1): both halves can make quorums, and in some
    scenarios they commit different blocks at one height. The checker must say so."""
    assert len(TWO_QUORUMS) == 4
    results = run_scenarios("negative", range(60), two_quorums, twins=2)
    caught = [r for _, r in results if any(v.invariant == "S1" for v in r.violations)]
    print(f"negative control: S1 reported in {len(caught)} of {len(results)} scenarios")
    assert caught
    assert all(r.stats["sent"] < 20_000 for _, r in results)  # no message storm either

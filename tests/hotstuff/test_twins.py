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

from bft.protocols import spec
from bft.sim import Report, run
from bft.sim.network import groups_of
from bft.sim.scenarios import twins_config, twins_sim_config
from bft.sim.twins import TwinsScenario, set_partitions

SPEC = spec("hotstuff")
N = 4
QUORUM = 3


def identities(group: frozenset[int]) -> set[int]:
    return {i % N for i in group}


def report_rate(label: str, results: list[tuple[TwinsScenario, Report]], elapsed: float) -> None:
    rate = len(results) / elapsed * 60
    heights = [r.stats["height"] for _, r in results]
    print(
        f"twins {label}: {len(results)} scenarios in {elapsed:.1f}s = {rate:.0f} scenarios/min; "
        f"mean height {sum(heights) / len(heights):.1f}, {heights.count(0)} without a commit"
    )


def run_scenarios(
    space: str, seeds: range, *, twins: int = 1, real_crypto: bool = False
) -> list[tuple[TwinsScenario, Report]]:
    started = time.perf_counter()
    out = []
    for seed in seeds:
        scenario, config = twins_config(
            SPEC, seed, n=N, twins=twins, space=space, real_crypto=real_crypto
        )
        out.append((scenario, run(config)))
    report_rate(space, out, time.perf_counter() - started)
    return out


def failures(results: list[tuple[TwinsScenario, Report]]) -> str:
    return "\n\n".join(
        f"{scenario.describe()}\n{report.describe()}"
        for scenario, report in results
        if not report.ok
    )


CHUNK = 100


@pytest.mark.parametrize("chunk", range(15))
def test_twins_live_partitions_keep_agreement(chunk: int) -> None:
    results = run_scenarios("quorum", range(chunk * CHUNK, (chunk + 1) * CHUNK))
    assert not failures(results), failures(results)
    assert sum(1 for _, r in results if r.stats["height"] > 0) >= CHUNK * 0.8


@pytest.mark.parametrize("chunk", range(4))
def test_twins_uniform_partitions_keep_agreement(chunk: int) -> None:
    results = run_scenarios("all", range(chunk * CHUNK, (chunk + 1) * CHUNK))
    assert not failures(results), failures(results)
    assert any(r.stats["height"] > 0 for _, r in results)


def test_twins_with_real_signatures() -> None:
    results = run_scenarios("quorum", range(40), real_crypto=True)
    assert not failures(results), failures(results)
    assert sum(1 for _, r in results if r.stats["height"] > 0) >= 30


TWO_QUORUMS = [
    groups_of(p)
    for p in set_partitions(list(range(N + 2)), 2)
    if len(p) == 2 and all(len(identities(frozenset(g))) >= QUORUM for g in p)
]


def two_quorums(rng: random.Random) -> TwinsScenario:
    """A partition drawn uniformly from those in which both groups hold a quorum (possible only
    with more than f twins), kept for the whole schedule; leaders uniform per round."""
    split = rng.choice(TWO_QUORUMS)
    leaders = tuple(rng.randrange(N) for _ in range(10))
    return TwinsScenario(tuple(split for _ in leaders), leaders)


def test_negative_control_more_than_f_twins_is_caught() -> None:
    """Two twins among four replicas (f = 1): both halves can make quorums, and in some
    scenarios they commit different blocks at one height. The checker must say so."""
    assert len(TWO_QUORUMS) == 4
    started = time.perf_counter()
    results = []
    for seed in range(60):
        scenario = two_quorums(random.Random(f"hotstuff-twins/negative/{seed}"))
        results.append((scenario, run(twins_sim_config(SPEC, scenario, seed, n=N, twins=2))))
    report_rate("negative", results, time.perf_counter() - started)
    caught = [r for _, r in results if any(v.invariant == "S1" for v in r.violations)]
    print(f"negative control: S1 reported in {len(caught)} of {len(results)} scenarios")
    assert caught
    assert all(r.stats["sent"] < 20_000 for _, r in results)  # no message storm either

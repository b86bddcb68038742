"""Twins scenarios (Bano et al., "Twins: BFT Systems Made Robust", 2022).

A scenario gives, for each of the first ``rounds`` rounds, a partition of the node instances
(replicas plus twins) and the leader of that round. The space is the product of the per-round
choices; :func:`sample_scenario` draws each round's partition uniformly from all partitions into
at most ``max_parts`` groups and its leader uniformly from all identities, so every scenario of
the space is equally likely (not just a prefix of an enumeration).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .network import Groups, groups_of


@dataclass(frozen=True, slots=True)
class TwinsScenario:
    partitions: tuple[Groups, ...]
    leaders: tuple[int, ...]

    def describe(self) -> str:
        rounds = []
        for r, (groups, leader) in enumerate(zip(self.partitions, self.leaders, strict=True)):
            parts = " | ".join(",".join(map(str, sorted(g))) for g in groups)
            rounds.append(f"round {r}: leader {leader}, {parts}")
        return "; ".join(rounds)


def set_partitions(items: list[int], max_parts: int) -> list[list[list[int]]]:
    """Every partition of ``items`` into at most ``max_parts`` non-empty groups."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for partition in set_partitions(rest, max_parts):
        for i in range(len(partition)):
            out.append([*partition[:i], [first, *partition[i]], *partition[i + 1 :]])
        if len(partition) < max_parts:
            out.append([[first], *partition])
    return out


def sample_scenario(
    rng: random.Random, instances: int, identities: int, rounds: int, max_parts: int = 2
) -> TwinsScenario:
    choices = set_partitions(list(range(instances)), max_parts)
    partitions = tuple(groups_of(rng.choice(choices)) for _ in range(rounds))
    leaders = tuple(rng.randrange(identities) for _ in range(rounds))
    return TwinsScenario(partitions, leaders)


SPACES = ("all", "quorum", "both")
"""Scenario spaces: every partition into at most two groups; only partitions that leave a
group with a quorum of identities in every round (a round without one can never finish, so
later rounds are never reached: this space reaches deeper); or the two alternately by seed."""

TWINS_PROTOCOLS = ("pbft", "hotstuff")


def has_quorum(groups: Groups, n: int, quorum: int) -> bool:
    """Whether some group holds ``quorum`` distinct identities (instance ``i`` is ``i % n``)."""
    return any(len({i % n for i in group}) >= quorum for group in groups)


def sample_quorum_scenario(
    rng: random.Random, instances: int, identities: int, rounds: int, quorum: int
) -> TwinsScenario:
    """Uniform over the rounds whose partition leaves a group with ``quorum`` identities
    (rejection sampling), and leaders."""
    scenario = sample_scenario(rng, instances, identities, rounds)
    partitions = list(scenario.partitions)
    for r, groups in enumerate(partitions):
        while not has_quorum(groups, identities, quorum):
            groups = sample_scenario(rng, instances, identities, 1).partitions[0]
        partitions[r] = groups
    return TwinsScenario(tuple(partitions), scenario.leaders)


def twins_scenario(
    protocol: str, seed: int, *, n: int = 4, twins: int = 1, rounds: int = 0, space: str = "all"
) -> TwinsScenario:
    """The scenario of ``seed`` in ``space`` (a pure function of its arguments)."""
    if protocol not in TWINS_PROTOCOLS:
        raise ValueError(f"Twins scenarios are for {' and '.join(TWINS_PROTOCOLS)}, not {protocol}")
    if space not in SPACES:
        raise ValueError(f"unknown scenario space {space!r}; choose from {', '.join(SPACES)}")
    if space == "both":
        space = ("all", "quorum")[seed % 2]
    rounds = rounds or (6 if protocol == "pbft" else 7)
    rng = random.Random(f"twins/{protocol}/{space}/{n}/{twins}/{seed}")
    if space == "all":
        return sample_scenario(rng, n + twins, n, rounds)
    quorum = n - (n - 1) // 3
    return sample_quorum_scenario(rng, n + twins, n, rounds, quorum)

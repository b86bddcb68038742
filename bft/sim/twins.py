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

"""The simulated network: delays, loss, duplication, partitions and one-way links.

Every decision draws from the simulation's seeded ``random.Random``, so a run replays exactly
from its seed. Nodes are *instances* (``0 .. len(nodes)-1``); with twins, two instances share one
replica identity. Partitions are sets of instances.

Two kinds of partition, both optional:

* time windows: from ``start`` to ``end`` (virtual microseconds) the instances are split into
  groups, and a message crosses only inside a group;
* per round (for Twins): the partition of round ``r`` applies to every message whose round (view,
  term) is ``r``, wherever in time it is sent, as in the Twins paper; rounds beyond the schedule
  are fully connected.

A one-way cut drops messages from ``a`` to ``b`` only.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Groups = tuple[frozenset[int], ...]


def groups_of(parts: Iterable[Iterable[int]]) -> Groups:
    return tuple(frozenset(p) for p in parts)


def connected(groups: Groups, a: int, b: int) -> bool:
    """Whether ``a`` and ``b`` share a group (an instance in no group is isolated)."""
    return any(a in g and b in g for g in groups)


@dataclass(frozen=True, slots=True)
class DelayModel:
    """Message delay in microseconds: ``base`` plus an exponential tail of mean ``jitter``,
    capped at ``cap``. Jitter reorders messages."""

    base: int = 500
    jitter: int = 300
    cap: int = 50_000

    def sample(self, rng: random.Random) -> int:
        extra = int(rng.expovariate(1.0 / self.jitter)) if self.jitter > 0 else 0
        return self.base + min(extra, self.cap)


@dataclass(frozen=True, slots=True)
class PartitionWindow:
    start: int
    end: int
    groups: Groups


@dataclass(frozen=True, slots=True)
class OneWayCut:
    """Drop messages from ``src`` to ``dst`` between ``start`` and ``end``."""

    src: int
    dst: int
    start: int = 0
    end: int = 2**62


@dataclass
class NetworkModel:
    delay: DelayModel = field(default_factory=DelayModel)
    drop: float = 0.0
    duplicate: float = 0.0
    windows: list[PartitionWindow] = field(default_factory=list)
    round_partitions: dict[int, Groups] = field(default_factory=dict)
    cuts: list[OneWayCut] = field(default_factory=list)
    lossy_until: int = 2**62
    """Drops and duplicates happen only before this time (so a run can heal)."""

    def partitioned(self, now: int, a: int, b: int, round_: int | None) -> bool:
        if round_ is not None:
            groups = self.round_partitions.get(round_)
            if groups is not None and not connected(groups, a, b):
                return True
        for window in self.windows:
            if window.start <= now < window.end and not connected(window.groups, a, b):
                return True
        return any(c.src == a and c.dst == b and c.start <= now < c.end for c in self.cuts)

    def deliveries(
        self, rng: random.Random, now: int, src: int, dst: int, round_: int | None
    ) -> Sequence[int]:
        """Delivery times of one message from ``src`` to ``dst`` (none when lost)."""
        if src != dst and self.partitioned(now, src, dst, round_):
            return ()
        lossy = now < self.lossy_until
        if lossy and self.drop and rng.random() < self.drop:
            return ()
        first = now + self.delay.sample(rng)
        if lossy and self.duplicate and rng.random() < self.duplicate:
            return (first, now + self.delay.sample(rng) * 2)
        return (first,)

    def heal_at(self, now: int) -> int:
        """The time after which no configured fault applies any more."""
        end = self.lossy_until if (self.drop or self.duplicate) else 0
        for window in self.windows:
            end = max(end, window.end)
        for cut in self.cuts:
            end = max(end, cut.end if cut.end < 2**62 else now)
        return end

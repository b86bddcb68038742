"""Link fault injection, controllable while a replica runs (for the testbed and the tests).

Faults are applied where this replica sends (drop, delay, cut to a peer) and where it receives
(cut from a peer). A partition is cuts both ways to every peer outside this replica's group.
When nothing is injected, ``active`` is false and the send and receive paths test one attribute.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class LinkFaults:
    seed: int = 0
    drop_to: dict[int, float] = field(default_factory=dict)
    delay_to: dict[int, float] = field(default_factory=dict)
    cut_to: set[int] = field(default_factory=set)
    cut_from: set[int] = field(default_factory=set)
    active: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _refresh(self) -> None:
        self.active = bool(self.drop_to or self.delay_to or self.cut_to or self.cut_from)

    def drop(self, peer: int, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError("a drop probability is between 0 and 1")
        if probability:
            self.drop_to[peer] = probability
        else:
            self.drop_to.pop(peer, None)
        self._refresh()

    def delay(self, peer: int, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a delay is not negative")
        if seconds:
            self.delay_to[peer] = seconds
        else:
            self.delay_to.pop(peer, None)
        self._refresh()

    def cut(self, peer: int, *, outbound: bool = True, inbound: bool = False) -> None:
        if outbound:
            self.cut_to.add(peer)
        if inbound:
            self.cut_from.add(peer)
        self._refresh()

    def partition(self, me: int, groups: Iterable[Iterable[int]], peers: Iterable[int]) -> None:
        """Cut both ways every peer that is not in ``me``'s group."""
        mine: set[int] = set()
        for group in groups:
            members = set(group)
            if me in members:
                mine = members
        for peer in peers:
            if peer != me and peer not in mine:
                self.cut_to.add(peer)
                self.cut_from.add(peer)
        self._refresh()

    def heal(self) -> None:
        self.drop_to.clear()
        self.delay_to.clear()
        self.cut_to.clear()
        self.cut_from.clear()
        self._refresh()

    def outbound(self, peer: int) -> tuple[bool, float]:
        """Whether to drop a message to ``peer``, and how long to hold it first."""
        if peer in self.cut_to:
            return True, 0.0
        p = self.drop_to.get(peer)
        if p is not None and self._rng.random() < p:
            return True, 0.0
        return False, self.delay_to.get(peer, 0.0)

    def inbound_blocked(self, peer: int) -> bool:
        return peer in self.cut_from

    def describe(self) -> dict[str, object]:
        return {
            "drop": dict(self.drop_to),
            "delay": dict(self.delay_to),
            "cut_to": sorted(self.cut_to),
            "cut_from": sorted(self.cut_from),
        }

"""Quorum maths and vote tallies that count each replica once."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from crypto.committee import byzantine_faults, byzantine_quorum, crash_faults, majority

__all__ = [
    "VoteTally",
    "byzantine_faults",
    "byzantine_quorum",
    "crash_faults",
    "majority",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class VoteTally(Generic[K, V]):
    """Votes per key (a statement, a block hash), each replica counted at most once per key.

    A second vote by the same replica for the same key is ignored (``add`` returns False); the
    first one is kept. Votes by one replica for *different* keys of the same round are a separate
    matter (equivocation), detected by the protocol with :meth:`voted`.
    """

    __slots__ = ("_votes",)

    def __init__(self) -> None:
        self._votes: dict[K, dict[int, V]] = {}

    def add(self, key: K, replica: int, vote: V) -> bool:
        votes = self._votes.setdefault(key, {})
        if replica in votes:
            return False
        votes[replica] = vote
        return True

    def count(self, key: K) -> int:
        return len(self._votes.get(key, ()))

    def votes(self, key: K) -> dict[int, V]:
        return dict(self._votes.get(key, {}))

    def voters(self, key: K) -> frozenset[int]:
        return frozenset(self._votes.get(key, ()))

    def voted(self, replica: int) -> list[K]:
        """Every key ``replica`` has voted for."""
        return [key for key, votes in self._votes.items() if replica in votes]

    def tallied(self) -> list[K]:
        """Every key that has at least one vote."""
        return list(self._votes)

    def discard(self, key: K) -> None:
        self._votes.pop(key, None)

    def __len__(self) -> int:
        return len(self._votes)

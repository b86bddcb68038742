"""Errors of the Raft core, beyond the shared ones of :mod:`bft.core.errors`."""

from __future__ import annotations

from bft.core.errors import LocalMisuse


class NotLeader(LocalMisuse):
    """An operation only the leader can do was asked of another replica."""

    def __init__(self, replica: int, leader: int | None) -> None:
        self.replica = replica
        self.leader = leader
        known = f"replica {leader} is" if leader is not None else "no leader is known to be"
        super().__init__(f"replica {replica} is not the leader; {known} the leader")

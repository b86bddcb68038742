"""A committee: the chain id and the ordered public keys of its replicas, with quorum sizes.

Replica ids are positions in the committee, ``0 .. n-1``. Certificates name signers by these ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from .keys import Domain, PublicKey, check_chain_id

MAX_COMMITTEE = 1024


def byzantine_faults(n: int) -> int:
    """The most Byzantine replicas a committee of ``n`` tolerates: ``f = floor((n - 1) / 3)``."""
    return (n - 1) // 3


def byzantine_quorum(n: int) -> int:
    """The smallest quorum whose pairwise intersections hold an honest replica.

    ``ceil((n + f + 1) / 2)``: it is ``2f + 1`` when ``n = 3f + 1`` and stays safe for other n.
    """
    f = byzantine_faults(n)
    return (n + f + 2) // 2


def crash_faults(n: int) -> int:
    """The most crashed replicas a majority protocol of ``n`` tolerates: ``floor((n - 1) / 2)``."""
    return (n - 1) // 2


def majority(n: int) -> int:
    """The smallest majority of ``n``: ``floor(n / 2) + 1``."""
    return n // 2 + 1


PROTOCOLS = ("pbft", "hotstuff", "raft")
BFT_PROTOCOLS = frozenset({"pbft", "hotstuff"})


class Committee:
    """The replicas of one chain, in id order, and the protocol they run. Keys must be distinct.

    ``protocol`` decides what a certificate from this committee must be: the BFT protocols
    (``pbft``, ``hotstuff``) sign with a Byzantine quorum, and a committee of one of them accepts
    only signed certificates, of either; a ``raft`` committee accepts only unsigned majority
    acknowledgements. A block cannot choose a weaker rule for itself.

    Immutable once built. ``verify_signature`` is the single place where a signer id is turned
    into a key; a deployment-specific verifier (such as the simulator's fast insecure scheme) is
    a subclass that overrides it.
    """

    __slots__ = ("_index", "chain_id", "members", "protocol")

    def __init__(self, chain_id: str, members: Iterable[PublicKey], protocol: str = "pbft") -> None:
        self.chain_id = check_chain_id(chain_id)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.protocol = protocol
        self.members: tuple[PublicKey, ...] = tuple(members)
        n = len(self.members)
        if not 1 <= n <= MAX_COMMITTEE:
            raise ValueError(f"a committee has 1 to {MAX_COMMITTEE} members, got {n}")
        index: dict[PublicKey, int] = {}
        for i, key in enumerate(self.members):
            if not isinstance(key, PublicKey):
                raise TypeError(f"member {i} is not a PublicKey")
            if key in index:
                raise ValueError(f"replicas {index[key]} and {i} have the same public key")
            index[key] = i
        self._index = index

    @property
    def is_bft(self) -> bool:
        return self.protocol in BFT_PROTOCOLS

    def accepts_protocol(self, protocol: str) -> bool:
        """Whether blocks of ``protocol`` may be certified by this committee."""
        if self.is_bft:
            return protocol in BFT_PROTOCOLS
        return protocol == self.protocol

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def f(self) -> int:
        """Byzantine faults tolerated (for BFT protocols)."""
        return byzantine_faults(self.n)

    @property
    def quorum(self) -> int:
        """Byzantine quorum size (2f+1 when n = 3f+1)."""
        return byzantine_quorum(self.n)

    @property
    def weak_quorum(self) -> int:
        """f+1: enough to contain one honest replica."""
        return self.f + 1

    @property
    def majority(self) -> int:
        return majority(self.n)

    def domain(self, kind: str) -> Domain:
        return Domain(self.chain_id, kind)

    def index_of(self, key: PublicKey) -> int | None:
        return self._index.get(key)

    def verify_signature(self, replica: int, digest: bytes, signature: bytes) -> bool:
        """True when ``signature`` is replica ``replica``'s signature over ``digest``."""
        if not 0 <= replica < len(self.members):
            return False
        return self.members[replica].verify_digest(digest, signature)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Committee)
            and other.chain_id == self.chain_id
            and other.members == self.members
            and other.protocol == self.protocol
        )

    def __hash__(self) -> int:
        return hash((self.chain_id, self.members, self.protocol))

    def __repr__(self) -> str:
        return f"Committee({self.chain_id!r}, {self.protocol}, n={self.n})"

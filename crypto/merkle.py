"""Merkle trees over transactions, as in RFC 6962 / RFC 9162 section 2.1.

Leaves and inner nodes are hashed in separate domains so that no inner node can pass for a leaf:

* leaf hash ``H(0x00 || data)``
* node hash ``H(0x01 || left || right)``
* the root of an empty tree is ``H("")``

A tree of ``n > 1`` leaves splits at ``k``, the largest power of two smaller than ``n``. Built
bottom-up, that is the same as pairing neighbours level by level and carrying an odd last node up
unchanged (never duplicating it, which would let two lists share a root).

A replica needs one block's tree several times: to build or check the header, to index the
block in its ledger, to answer clients with inclusion proofs. The trees of the last few
transaction tuples are remembered (:data:`RECENT_TREES`), keyed by the tuple itself, so equal
transactions give the same tree whoever asks, and the hashing is done once per block.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from .hashing import DIGEST_SIZE

EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"

RECENT_TREES = 8
"""Trees remembered (with their transactions: blocks in flight through one replica)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    sha = hashlib.sha256
    nxt = [sha(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        nxt.append(level[-1])
    return nxt


def _leaf_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    sha = hashlib.sha256
    return [sha(_LEAF + d).digest() for d in leaves]


def _levels(level: list[bytes]) -> list[list[bytes]]:
    levels = [level]
    while len(level) > 1:
        level = _next_level(level)
        levels.append(level)
    return levels


@functools.lru_cache(maxsize=RECENT_TREES)
def _tree_levels(leaves: tuple[bytes, ...]) -> list[list[bytes]]:
    return _levels(_leaf_hashes(leaves))


def _all_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over ``leaves``; shared, so callers must not change them."""
    if type(leaves) is tuple:
        return _tree_levels(leaves)
    return _levels(_leaf_hashes(leaves))


def leaf_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    if type(leaves) is tuple:
        return list(_tree_levels(leaves)[0])
    return _leaf_hashes(leaves)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash over already-computed leaf hashes."""
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of the leaf data ``leaves``."""
    if not leaves:
        return EMPTY_ROOT
    return _all_levels(leaves)[-1][0]


class MerkleTree:
    """All levels of a tree, for producing inclusion proofs."""

    __slots__ = ("levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = _all_levels(leaves)

    @classmethod
    def from_leaf_hashes(cls, hashes: Sequence[bytes]) -> MerkleTree:
        tree = cls.__new__(cls)
        tree._build(list(hashes))
        return tree

    def _build(self, level: list[bytes]) -> None:
        self.levels = _levels(level)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0] if self.size else EMPTY_ROOT

    def proof(self, index: int) -> tuple[bytes, ...]:
        """The audit path of leaf ``index``: sibling hashes from the leaf up to the root."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} is outside a tree of {self.size}")
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
        return tuple(path)


def verify_inclusion(
    data: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True when ``proof`` shows that ``data`` is leaf ``index`` of the tree of ``size`` leaves
    whose root is ``root`` (the verification procedure of RFC 9162, section 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    if any(len(p) != DIGEST_SIZE for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf_hash(data)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root

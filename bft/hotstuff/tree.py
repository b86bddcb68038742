"""The block tree: the blocks above the ledger's tip that a replica knows, linked by hash.

The root is the last block in the replica's ledger (the genesis hash for an empty one). Every
other node has its parent in the tree, so walking up from any node reaches the root; the
transactions of that walk are what a new block on top of the node must not repeat. When the
ledger grows, the new tip becomes the root and every node that does not descend from it (a branch
that lost) is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from bft.core.requests import Request, RequestId

from .messages import HotStuffBlock


@dataclass(slots=True, eq=False)
class Node:
    """One block of the tree, with what the replica learned about it."""

    hash: bytes
    height: int
    view: int
    parent: bytes
    block: HotStuffBlock | None
    """``None`` for a root known only from the ledger (its justify is not needed)."""
    requests: list[Request] = field(default_factory=list)
    malformed: bool = False
    """Some transaction did not decode: no honest replica votes for the block."""
    decided: bool = False
    """Committed by a 3-chain seen here (or certified); its commit vote is signed."""
    persisted: bool = False
    """Written to the durable log (blocks the replica voted for)."""
    ids: frozenset[RequestId] = frozenset()

    @property
    def has_txs(self) -> bool:
        return self.block is not None and bool(self.block.txs)


class BlockTree:
    __slots__ = ("nodes", "root")

    def __init__(self, root: Node) -> None:
        self.root = root
        self.nodes: dict[bytes, Node] = {root.hash: root}

    def get(self, block_hash: bytes) -> Node | None:
        return self.nodes.get(block_hash)

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def add(self, node: Node) -> None:
        if node.parent not in self.nodes:
            raise ValueError("a node's parent must be in the tree")
        self.nodes[node.hash] = node

    def parent_of(self, node: Node) -> Node | None:
        if node is self.root:
            return None
        return self.nodes.get(node.parent)

    def branch(self, block_hash: bytes) -> Iterator[Node]:
        """The nodes from ``block_hash`` down to the root, root excluded."""
        node = self.nodes.get(block_hash)
        root = self.root
        while node is not None and node is not root:
            yield node
            node = self.nodes.get(node.parent)

    def chain_ids(self, block_hash: bytes) -> set[RequestId]:
        """The requests in the blocks from ``block_hash`` down to the root, root excluded."""
        out: set[RequestId] = set()
        for node in self.branch(block_hash):
            out |= node.ids
        return out

    def set_root(self, root: Node) -> list[Node]:
        """Make ``root`` (a child of the current root) the root; return the dropped nodes."""
        keep: dict[bytes, Node] = {root.hash: root}
        dropped: list[Node] = []
        for node in sorted(self.nodes.values(), key=lambda n: n.height):
            if node is root:
                continue
            if node.height > root.height and node.parent in keep:
                keep[node.hash] = node
            else:
                dropped.append(node)
        self.root = root
        self.nodes = keep
        return dropped

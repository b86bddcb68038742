"""Messages every protocol shares: fetching committed blocks from a peer.

A replica that is behind asks a peer for certified blocks; the *driver* of the peer answers from
its ledger (cores never read the disk), and the asking core verifies every block (linkage and
certificate) before it commits it. Record tags 0x20-0x2f belong here; each protocol has its own
range (pbft 0x30-0x4f, hotstuff 0x50-0x6f, raft 0x70-0x8f).
"""

from __future__ import annotations

from crypto.codec import Nested, Record, Seq, UInt, record, wire
from ledger import Block

MAX_BLOCKS_PER_RESPONSE = 64


@record(tag=0x20)
class BlockRequest(Record):
    """Send me up to ``count`` committed blocks from height ``start``."""

    start: int = wire(UInt(minimum=1))
    count: int = wire(UInt(MAX_BLOCKS_PER_RESPONSE, minimum=1))


@record(tag=0x21)
class BlockResponse(Record):
    """Committed blocks in height order from ``start``; ``height`` is the sender's ledger height
    (so the asker knows whether to ask again)."""

    start: int = wire(UInt(minimum=1))
    height: int = wire(UInt())
    blocks: tuple[Block, ...] = wire(Seq(Nested(Block), max_len=MAX_BLOCKS_PER_RESPONSE))


SHARED_MESSAGES: tuple[type[Record], ...] = (BlockRequest, BlockResponse)

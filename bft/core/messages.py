"""Messages every protocol shares: fetching committed blocks from a peer, and relaying client
requests to the leader.

A replica that is behind asks a peer for certified blocks; the *driver* of the peer answers from
its ledger (cores never read the disk), and the asking core verifies every block (linkage and
certificate) before it commits it. In the protocols with a stable leader (PBFT, Raft), a replica
hands the leader the client requests that would otherwise wait with it alone (:class:`Relay`).
Record tags 0x20-0x2f belong here; each protocol has its own range (pbft 0x30-0x4f, hotstuff
0x50-0x6f, raft 0x70-0x8f).
"""

from __future__ import annotations

from crypto.codec import Bytes, Nested, Record, Seq, UInt, record, wire
from ledger import MAX_TX_SIZE, Block

MAX_BLOCKS_PER_RESPONSE = 64
MAX_RELAY_TXS = 512
"""Client requests in one :class:`Relay` (a sender cuts at ``MAX_RELAY_BYTES`` too)."""
MAX_RELAY_BYTES = 1 << 20


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


@record(tag=0x22)
class Relay(Record):
    """Client requests (encoded transactions) for the leader: ones their client sent to the
    sender alone, taking it for the leader, or that waited with the sender when a new leader
    came. The leader admits them as it admits its own clients' requests."""

    txs: tuple[bytes, ...] = wire(
        Seq(Bytes(min_size=1, max_size=MAX_TX_SIZE), min_len=1, max_len=MAX_RELAY_TXS)
    )


SHARED_MESSAGES: tuple[type[Record], ...] = (BlockRequest, BlockResponse, Relay)

"""What clients and replicas say to each other on a replica's client port (tags 0xa0-0xaf).

* :class:`Submit` - a batch of encoded transactions; ``alone`` when the client sent it to this
  replica only, taking it for the leader (a replica that does not lead relays it to the one
  that does).
* :class:`Refused` - requests the replica will not order, with the reason (final: not committed).
* :class:`Committed` - for one block: its header and certificate, and for each of this client's
  transactions in it, the position and the Merkle evidence. With the client's own transaction
  bytes that is a full receipt (:class:`ledger.Receipt`), checkable against the committee file.
  One frame per client per block.
* :class:`Subscribe` / :class:`Blocks` - stream certified blocks from a height (the order).
* :class:`StatusRequest` / :class:`StatusReply` - the replica's state, as JSON text.
* :class:`Control` / :class:`ControlReply` - fault injection and testbed commands; only from
  clients whose key the replica's configuration lists as admin.
"""

from __future__ import annotations

from crypto import MAX_COMMITTEE, Committee, QuorumCertificate
from crypto.codec import (
    Bool,
    Bytes,
    CodecError,
    Nested,
    Record,
    RecordUnion,
    Seq,
    Text,
    UInt,
    record,
    wire,
)
from crypto.hashing import DIGEST_SIZE
from ledger import MAX_BLOCK_TXS, MAX_TX_SIZE, Block, BlockHeader

MAX_SUBMIT = 10_000
MAX_PLACED = 100_000
MAX_BLOCKS = 64
MIN_LEADERS = 3


def leader_count(committee: Committee) -> int:
    """How many replicas an answer names in ``Committed.leaders``: f+1 (so one is honest), but
    never fewer than three (or n). With two, at n = 4, a client's requests that reached the
    first after it proposed waited for the second alone, and the views between had nothing to
    propose: 15,286 -> 13,557 tx/s at saturation (4 alternating pairs), where three gave the
    throughput of sending to all four (14,317 / 14,333)."""
    return min(committee.n, max(committee.f + 1, MIN_LEADERS))


@record(tag=0xA0)
class Submit(Record):
    txs: tuple[bytes, ...] = wire(
        Seq(Bytes(min_size=1, max_size=MAX_TX_SIZE), min_len=1, max_len=MAX_SUBMIT)
    )
    alone: bool = wire(Bool(), default=False)


@record(tag=0xA1)
class Refusal(Record):
    client: bytes = wire(Bytes(min_size=1, max_size=32))
    seq: int = wire(UInt())
    reason: str = wire(Text(512))


@record(tag=0xA2)
class Refused(Record):
    items: tuple[Refusal, ...] = wire(Seq(Nested(Refusal), min_len=1, max_len=MAX_SUBMIT))


@record(tag=0xA4)
class Committed(Record):
    """Where a client's transactions are in one block, with what proves it.

    ``clients``, ``seqs`` and ``indexes`` are parallel: the request ``(clients[i], seqs[i])`` is
    transaction ``indexes[i]`` of the block. The Merkle evidence is whichever is smaller: either
    ``paths`` (per item, the audit path's hashes concatenated) or ``leaves`` (all the block's leaf
    hashes, concatenated, from which the client computes every path itself).

    ``leaders``: where a client should send its next requests, as the answering replica sees it
    (HotStuff: the :func:`leader_count` replicas that lead its current view and the views
    after; empty where the block's proposer is the leader to use). A hint, not a proof: a wrong
    one delays requests by the client's ``leader_timeout`` at most.
    """

    header: BlockHeader = wire(Nested(BlockHeader))
    certificate: QuorumCertificate = wire(Nested(QuorumCertificate))
    clients: tuple[bytes, ...] = wire(
        Seq(Bytes(min_size=1, max_size=32), min_len=1, max_len=MAX_PLACED)
    )
    seqs: tuple[int, ...] = wire(Seq(UInt(), min_len=1, max_len=MAX_PLACED))
    indexes: tuple[int, ...] = wire(Seq(UInt(MAX_BLOCK_TXS - 1), min_len=1, max_len=MAX_PLACED))
    paths: tuple[bytes, ...] = wire(Seq(Bytes(max_size=64 * DIGEST_SIZE), max_len=MAX_PLACED))
    leaves: bytes = wire(Bytes(max_size=MAX_BLOCK_TXS * DIGEST_SIZE))
    leaders: tuple[int, ...] = wire(Seq(UInt(MAX_COMMITTEE - 1), max_len=MAX_COMMITTEE), default=())

    def _check(self) -> None:
        n = len(self.clients)
        if len(self.seqs) != n or len(self.indexes) != n:
            raise CodecError("clients, seqs and indexes differ in length", "Committed")
        if self.leaves:
            if self.paths or len(self.leaves) != DIGEST_SIZE * self.header.tx_count:
                raise CodecError("leaves must be the block's leaf hashes, and alone", "Committed")
        elif len(self.paths) != n or any(len(p) % DIGEST_SIZE for p in self.paths):
            raise CodecError("one path of whole hashes per item, or the leaves", "Committed")
        if any(i >= self.header.tx_count for i in self.indexes):
            raise CodecError("an index beyond the block's transactions", "Committed")


@record(tag=0xA5)
class Subscribe(Record):
    start: int = wire(UInt(minimum=1))


@record(tag=0xA6)
class Blocks(Record):
    blocks: tuple[Block, ...] = wire(Seq(Nested(Block), min_len=1, max_len=MAX_BLOCKS))


@record(tag=0xA7)
class StatusRequest(Record):
    verbose: bool = wire(Bool())


@record(tag=0xA8)
class StatusReply(Record):
    json: str = wire(Text(1 << 20))


@record(tag=0xA9)
class Control(Record):
    command: str = wire(Text(64))
    args: str = wire(Text(4096))
    """JSON object."""


@record(tag=0xAA)
class ControlReply(Record):
    ok: bool = wire(Bool())
    detail: str = wire(Text(4096))


TO_REPLICA = RecordUnion([Submit, Subscribe, StatusRequest, Control])
TO_CLIENT = RecordUnion([Refused, Committed, Blocks, StatusReply, ControlReply])

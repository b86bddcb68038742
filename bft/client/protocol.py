"""What clients and replicas say to each other on a replica's client port (tags 0xa0-0xaf).

* :class:`Submit` - a batch of encoded transactions.
* :class:`Refused` - requests the replica will not order, with the reason (final: not committed).
* :class:`Committed` - for one block: its header and certificate, and for each of this client's
  transactions in it, the position and Merkle path. With the client's own transaction bytes
  that is a full receipt (:class:`ledger.Receipt`), checkable against the committee file.
  One frame per client per block.
* :class:`Subscribe` / :class:`Blocks` - stream certified blocks from a height (the order).
* :class:`StatusRequest` / :class:`StatusReply` - the replica's state, as JSON text.
* :class:`Control` / :class:`ControlReply` - fault injection and testbed commands; only from
  clients whose key the replica's configuration lists as admin.
"""

from __future__ import annotations

from crypto import QuorumCertificate
from crypto.codec import Bool, Bytes, Nested, Record, RecordUnion, Seq, Text, UInt, record, wire
from crypto.hashing import DIGEST_SIZE
from ledger import MAX_TX_SIZE, Block, BlockHeader, Receipt

MAX_SUBMIT = 10_000
MAX_PLACED = 100_000
MAX_BLOCKS = 64


@record(tag=0xA0)
class Submit(Record):
    txs: tuple[bytes, ...] = wire(
        Seq(Bytes(min_size=1, max_size=MAX_TX_SIZE), min_len=1, max_len=MAX_SUBMIT)
    )


@record(tag=0xA1)
class Refusal(Record):
    client: bytes = wire(Bytes(min_size=1, max_size=32))
    seq: int = wire(UInt())
    reason: str = wire(Text(512))


@record(tag=0xA2)
class Refused(Record):
    items: tuple[Refusal, ...] = wire(Seq(Nested(Refusal), min_len=1, max_len=MAX_SUBMIT))


@record(tag=0xA3)
class Placed(Record):
    client: bytes = wire(Bytes(min_size=1, max_size=32))
    seq: int = wire(UInt())
    index: int = wire(UInt())
    path: tuple[bytes, ...] = wire(Seq(Bytes(DIGEST_SIZE), max_len=64))


@record(tag=0xA4)
class Committed(Record):
    header: BlockHeader = wire(Nested(BlockHeader))
    certificate: QuorumCertificate = wire(Nested(QuorumCertificate))
    items: tuple[Placed, ...] = wire(Seq(Nested(Placed), min_len=1, max_len=MAX_PLACED))

    def receipt(self, item: Placed, tx: bytes) -> Receipt:
        return Receipt(
            header=self.header,
            certificate=self.certificate,
            tx=tx,
            index=item.index,
            path=item.path,
        )


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

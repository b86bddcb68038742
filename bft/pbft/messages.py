"""PBFT's messages (record tags 0x30-0x4f) and the statements its replicas sign.

Every signature covers a domain ``(chain id, "pbft/<kind>")`` and the canonical encoding of
``[view, seq, digest]`` (or the message's own fields for view changes), so a prepare can never
pass for a commit, nor a vote of one view or chain for another.

What is ordered at a sequence number is a :class:`Proposal`: the requests, and the view and
primary that first proposed them. A primary of a later view that re-proposes a prepared proposal
sends the very same ``Proposal`` (same digest) in its own pre-prepare, so every replica that
commits it builds a byte-identical ledger block, whatever view it committed in.
"""

from __future__ import annotations

from crypto import MAX_COMMITTEE, QuorumCertificate, sha256
from crypto.codec import Bytes, Nested, Optional, Record, Seq, UInt, encode_value, record, wire
from crypto.hashing import DIGEST_SIZE
from crypto.keys import SIGNATURE_SIZE, Domain
from ledger import MAX_BLOCK_TXS, MAX_TX_SIZE, BlockHeader

MAX_WINDOW = 1024
SIG = Bytes(SIGNATURE_SIZE)


@record(tag=0x30)
class Proposal(Record):
    """A batch ordered at ``seq``: first proposed in ``view`` by replica ``proposer``."""

    seq: int = wire(UInt(minimum=1))
    view: int = wire(UInt())
    proposer: int = wire(UInt(MAX_COMMITTEE - 1))
    txs: tuple[bytes, ...] = wire(
        Seq(Bytes(min_size=1, max_size=MAX_TX_SIZE), max_len=MAX_BLOCK_TXS)
    )

    def digest(self) -> bytes:
        return sha256(self.encode())

    @property
    def is_null(self) -> bool:
        return not self.txs


@record(tag=0x31)
class PrePrepare(Record):
    """The primary of ``view`` assigns ``proposal`` to ``seq`` (its signature over the prepare
    statement's sibling, domain ``pbft/pre-prepare``)."""

    view: int = wire(UInt())
    seq: int = wire(UInt(minimum=1))
    proposal: Proposal = wire(Nested(Proposal))
    signature: bytes = wire(SIG)


@record(tag=0x32)
class Prepare(Record):
    view: int = wire(UInt())
    seq: int = wire(UInt(minimum=1))
    digest: bytes = wire(Bytes(DIGEST_SIZE))
    signature: bytes = wire(SIG)


@record(tag=0x33)
class Commit(Record):
    view: int = wire(UInt())
    seq: int = wire(UInt(minimum=1))
    digest: bytes = wire(Bytes(DIGEST_SIZE))
    signature: bytes = wire(SIG)


@record(tag=0x34)
class Checkpoint(Record):
    """The sender executed the ledger block of ``height`` with hash ``block_hash`` (whose header
    has ``view``); the signature is over the block's ledger commit statement, so 2f+1 of these
    are the block's certificate, and at a checkpoint interval, a stable checkpoint."""

    height: int = wire(UInt(minimum=1))
    view: int = wire(UInt())
    block_hash: bytes = wire(Bytes(DIGEST_SIZE))
    signature: bytes = wire(SIG)


@record(tag=0x35)
class PreparedProof(Record):
    """A prepared certificate: the pre-prepare and 2f prepares from distinct backups."""

    preprepare: PrePrepare = wire(Nested(PrePrepare))
    prepares: QuorumCertificate = wire(Nested(QuorumCertificate))


@record(tag=0x36)
class CheckpointProof(Record):
    """A certified ledger block header: the state a replica vouches for in a view change."""

    header: BlockHeader = wire(Nested(BlockHeader))
    certificate: QuorumCertificate = wire(Nested(QuorumCertificate))


@record(tag=0x37)
class ViewChange(Record):
    """``replica`` moves to ``new_view``; its last certified block and what it prepared above."""

    new_view: int = wire(UInt(minimum=1))
    replica: int = wire(UInt(MAX_COMMITTEE - 1))
    checkpoint: CheckpointProof | None = wire(Optional(Nested(CheckpointProof)))
    prepared: tuple[PreparedProof, ...] = wire(Seq(Nested(PreparedProof), max_len=MAX_WINDOW))
    signature: bytes = wire(SIG)

    @property
    def stable_height(self) -> int:
        return self.checkpoint.header.height if self.checkpoint is not None else 0

    def body(self) -> bytes:
        """What the signature covers: every field but the signature."""
        return encode_value(self.to_wire()[:-1])


@record(tag=0x38)
class NewView(Record):
    """The primary of ``view`` starts it: 2f+1 view changes, and the pre-prepares they imply."""

    view: int = wire(UInt(minimum=1))
    view_changes: tuple[ViewChange, ...] = wire(
        Seq(Nested(ViewChange), min_len=1, max_len=MAX_COMMITTEE)
    )
    preprepares: tuple[PrePrepare, ...] = wire(Seq(Nested(PrePrepare), max_len=MAX_WINDOW))
    signature: bytes = wire(SIG)

    def body(self) -> bytes:
        return encode_value(self.to_wire()[:-1])


MESSAGES: tuple[type[Record], ...] = (
    Proposal,
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    PreparedProof,
    CheckpointProof,
    ViewChange,
    NewView,
)


class Statements:
    """The signature domains of one chain, built once."""

    __slots__ = ("commit", "new_view", "pre_prepare", "prepare", "view_change")

    def __init__(self, chain_id: str) -> None:
        self.pre_prepare = Domain(chain_id, "pbft/pre-prepare")
        self.prepare = Domain(chain_id, "pbft/prepare")
        self.commit = Domain(chain_id, "pbft/commit")
        self.view_change = Domain(chain_id, "pbft/view-change")
        self.new_view = Domain(chain_id, "pbft/new-view")

    @staticmethod
    def vote_payload(view: int, seq: int, digest: bytes) -> bytes:
        return encode_value([view, seq, digest])

    def pre_prepare_digest(self, view: int, seq: int, digest: bytes) -> bytes:
        return self.pre_prepare.digest(self.vote_payload(view, seq, digest))

    def prepare_digest(self, view: int, seq: int, digest: bytes) -> bytes:
        return self.prepare.digest(self.vote_payload(view, seq, digest))

    def commit_digest(self, view: int, seq: int, digest: bytes) -> bytes:
        return self.commit.digest(self.vote_payload(view, seq, digest))

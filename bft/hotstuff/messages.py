"""HotStuff's messages (record tags 0x50-0x6f) and the statements its replicas sign.

Every signature covers a domain ``(chain id, "hotstuff/<kind>")`` and the canonical encoding of
the fields that give it meaning, so a vote can never pass for a timeout, nor a vote of one view,
height, block or chain for another:

* vote: ``[view, height, block_hash]`` in ``hotstuff/vote``; 2f+1 of them are a :class:`QC`;
* timeout: ``[view]`` in ``hotstuff/timeout``; 2f+1 of them are a :class:`TC`;
* proposal: ``[view, block_hash]`` in ``hotstuff/proposal`` (the leader's; evidence of
  equivocation);
* commit: the ledger's commit statement of a block (``block/commit``, see :mod:`ledger.block`);
  2f+1 of them are the block's ledger certificate.

A HotStuff block is a ledger :class:`~ledger.BlockHeader` with its transactions and the QC that
justifies it; its identity is the ledger block hash, and its parent is always the block its QC
certifies (``header.prev_hash == justify.block_hash``), so the chain of HotStuff blocks is the
ledger's hash chain.

Genesis convention: the first block's parent is the genesis hash of the chain, at height 0, and
its justify is :func:`genesis_qc`: view 0, height 0, the genesis hash, an empty signer bitmap and
no signatures. That exact value, and no other unsigned certificate, is valid.
"""

from __future__ import annotations

from crypto import QuorumCertificate
from crypto.codec import (
    Bytes,
    CodecError,
    Nested,
    Optional,
    Record,
    Seq,
    UInt,
    encode_value,
    record,
    wire,
)
from crypto.hashing import DIGEST_SIZE
from crypto.keys import SIGNATURE_SIZE, Domain
from ledger import MAX_BLOCK_TXS, MAX_TX_SIZE, BlockHeader, commit_domain, genesis_hash

PROTOCOL = "hotstuff"
SIG = Bytes(SIGNATURE_SIZE)
HASH = Bytes(DIGEST_SIZE)
MAX_COMMIT_VOTES = 64
MAX_FETCH = 64
MAX_CERTIFICATES = 16


@record(tag=0x50)
class QC(Record):
    """A quorum certificate on a block: 2f+1 votes over ``[view, height, block_hash]``."""

    view: int = wire(UInt())
    height: int = wire(UInt())
    block_hash: bytes = wire(HASH)
    votes: QuorumCertificate = wire(Nested(QuorumCertificate))


@record(tag=0x51)
class HotStuffBlock(Record):
    """A proposed block: its ledger header, its transactions and the QC of its parent."""

    header: BlockHeader = wire(Nested(BlockHeader))
    txs: tuple[bytes, ...] = wire(
        Seq(Bytes(min_size=1, max_size=MAX_TX_SIZE), max_len=MAX_BLOCK_TXS)
    )
    justify: QC = wire(Nested(QC))

    def _check(self) -> None:
        if len(self.txs) != self.header.tx_count:
            raise CodecError(
                f"header says {self.header.tx_count} transactions, block has {len(self.txs)}",
                "HotStuffBlock.txs",
            )

    @property
    def view(self) -> int:
        return self.header.view

    @property
    def height(self) -> int:
        return self.header.height


@record(tag=0x52)
class TC(Record):
    """A timeout certificate: 2f+1 timeouts for ``view``, and the highest QC they carried."""

    view: int = wire(UInt(minimum=1))
    votes: QuorumCertificate = wire(Nested(QuorumCertificate))
    high_qc: QC = wire(Nested(QC))


@record(tag=0x57)
class CommitCertificate(Record):
    """The ledger certificate of the block ``block_hash`` at ``height``: 2f+1 commit votes."""

    height: int = wire(UInt(minimum=1))
    view: int = wire(UInt())
    block_hash: bytes = wire(HASH)
    certificate: QuorumCertificate = wire(Nested(QuorumCertificate))


@record(tag=0x53)
class Proposal(Record):
    """The leader of ``block.header.view`` proposes ``block``; ``tc`` is the timeout certificate
    of the previous view when the justify QC is not from it (so replicas can enter the view);
    ``certificates`` are ledger certificates the leader just made from the commit votes in the
    votes it gathered (outside the signature: each one proves itself)."""

    block: HotStuffBlock = wire(Nested(HotStuffBlock))
    tc: TC | None = wire(Optional(Nested(TC)))
    signature: bytes = wire(SIG)
    certificates: tuple[CommitCertificate, ...] = wire(
        Seq(Nested(CommitCertificate), max_len=MAX_CERTIFICATES)
    )

    @property
    def view(self) -> int:
        return self.block.header.view


@record(tag=0x54)
class CommitVote(Record):
    """The sender committed the block ``block_hash`` at ``height`` (proposed in ``view``): its
    signature over the block's ledger commit statement."""

    height: int = wire(UInt(minimum=1))
    view: int = wire(UInt())
    block_hash: bytes = wire(HASH)
    signature: bytes = wire(SIG)


@record(tag=0x55)
class Vote(Record):
    """A vote for a block, sent to the leader of the next view, with the sender's commit votes
    for blocks it committed and has not seen certified."""

    view: int = wire(UInt(minimum=1))
    height: int = wire(UInt(minimum=1))
    block_hash: bytes = wire(HASH)
    signature: bytes = wire(SIG)
    commits: tuple[CommitVote, ...] = wire(Seq(Nested(CommitVote), max_len=MAX_COMMIT_VOTES))


@record(tag=0x56)
class Timeout(Record):
    """The sender gave up on ``view``. Broadcast to all, with what lets the others follow:

    * ``high_qc`` and ``high_tc``: its highest QC, and the TC that brought it into ``view`` (if
      one did);
    * ``vote``: its vote of ``view - 1``, the one the (silent) leader of ``view`` should have
      made a QC of: anybody can make that QC from 2f+1 timeouts;
    * ``previous``: its timeout signature for ``view - 1`` (empty in view 1). A replica can be
      in ``view`` without a certificate of ``view - 1`` (it voted there and moved on); with
      these, the replicas still in ``view - 1`` can make its TC and follow;
    * ``commits``: its pending commit votes.
    """

    view: int = wire(UInt(minimum=1))
    high_qc: QC = wire(Nested(QC))
    high_tc: TC | None = wire(Optional(Nested(TC)))
    vote: Vote | None = wire(Optional(Nested(Vote)))
    commits: tuple[CommitVote, ...] = wire(Seq(Nested(CommitVote), max_len=MAX_COMMIT_VOTES))
    signature: bytes = wire(SIG)
    previous: bytes = wire(Bytes(max_size=SIGNATURE_SIZE))

    def _check(self) -> None:
        if len(self.previous) not in ((0,) if self.view == 1 else (SIGNATURE_SIZE,)):
            raise CodecError(
                "a timeout's previous signature is 64 bytes, none in view 1", "Timeout.previous"
            )


@record(tag=0x58)
class CommitVotes(Record):
    """Re-sent commit votes of the sender (when their blocks stay uncertified for a while)."""

    votes: tuple[CommitVote, ...] = wire(Seq(Nested(CommitVote), max_len=MAX_COMMIT_VOTES))


@record(tag=0x59)
class FetchBlocks(Record):
    """Send me the uncommitted block ``block_hash`` and up to ``count - 1`` of its ancestors."""

    block_hash: bytes = wire(HASH)
    count: int = wire(UInt(MAX_FETCH, minimum=1))


@record(tag=0x5A)
class FetchedBlocks(Record):
    """Blocks in descending height from the one asked for; ``height`` is the sender's ledger
    height (blocks at or below it are fetched from the ledger with ``BlockRequest``)."""

    height: int = wire(UInt())
    blocks: tuple[HotStuffBlock, ...] = wire(Seq(Nested(HotStuffBlock), max_len=MAX_FETCH))


@record(tag=0x5B)
class Status(Record):
    """Periodic gossip: the sender's ledger height, view, highest QC and highest TC. A replica
    behind in height fetches the ledger blocks; one behind in view catches up."""

    height: int = wire(UInt())
    view: int = wire(UInt())
    high_qc: QC = wire(Nested(QC))
    high_tc: TC | None = wire(Optional(Nested(TC)))


MESSAGES: tuple[type[Record], ...] = (
    QC,
    HotStuffBlock,
    TC,
    Proposal,
    CommitVote,
    Vote,
    Timeout,
    CommitCertificate,
    CommitVotes,
    FetchBlocks,
    FetchedBlocks,
    Status,
)


class Statements:
    """The signature domains of one chain, built once."""

    __slots__ = ("commit", "proposal", "timeout", "vote")

    def __init__(self, chain_id: str) -> None:
        self.vote = Domain(chain_id, "hotstuff/vote")
        self.timeout = Domain(chain_id, "hotstuff/timeout")
        self.proposal = Domain(chain_id, "hotstuff/proposal")
        self.commit = commit_domain(chain_id)

    def vote_digest(self, view: int, height: int, block_hash: bytes) -> bytes:
        return self.vote.digest(encode_value([view, height, block_hash]))

    def timeout_digest(self, view: int) -> bytes:
        return self.timeout.digest(encode_value([view]))

    def proposal_digest(self, view: int, block_hash: bytes) -> bytes:
        return self.proposal.digest(encode_value([view, block_hash]))

    def commit_digest(self, view: int, height: int, block_hash: bytes) -> bytes:
        """The ledger commit statement of a HotStuff block (``header.commit_statement``)."""
        return self.commit.digest(encode_value([PROTOCOL, view, height, block_hash]))


def genesis_qc(chain_id: str, n: int) -> QC:
    """The QC that justifies the first block: see the module's genesis convention."""
    gh = genesis_hash(chain_id)
    statement = Statements(chain_id).vote_digest(0, 0, gh)
    return QC(view=0, height=0, block_hash=gh, votes=QuorumCertificate.unsigned(statement, [], n))

"""Verification of blocks and chains, with no I/O: the rules an auditor applies to a ledger.

For each block, in order:

1. the header is for this chain and the next height, and links to the previous block's hash
   (the genesis hash for height 1);
2. the Merkle root and count in the header match the transactions;
3. with a committee: the block's protocol is one the committee runs (the committee file states
   it; a block cannot pick a weaker rule for itself), its proposer is a member, and the
   certificate is over this block's commit statement and carries, for a BFT committee, valid
   signatures of a Byzantine quorum of distinct members; for a Raft committee, a majority of
   known members (unsigned, see ``docs/ledger-format.md`` for what that proves);
4. optionally, every transaction decodes and, when signed, carries its client's valid signature.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crypto import Committee, InvalidCertificate, QuorumCertificate
from crypto.codec import CodecError

from .block import Block, BlockHeader, genesis_hash
from .errors import BlockError
from .tx import Transaction


class CommitteeSchedule:
    """Which committee certifies which heights, for a chain that changed mode or committee.

    ``epochs`` are ``(first height, committee)`` in height order, the first from height 1; each
    committee governs from its first height up to the next one's. A chain that never changed has
    one epoch (:meth:`single`).
    """

    __slots__ = ("epochs",)

    def __init__(self, epochs: Sequence[tuple[int, Committee]]) -> None:
        epochs = tuple(epochs)
        if not epochs or epochs[0][0] != 1:
            raise ValueError("a committee schedule starts at height 1")
        firsts = [first for first, _ in epochs]
        if firsts != sorted(set(firsts)):
            raise ValueError("committee epochs must start at increasing heights")
        chains = {committee.chain_id for _, committee in epochs}
        if len(chains) != 1:
            raise ValueError(f"committees of different chains: {sorted(chains)}")
        self.epochs = epochs

    @classmethod
    def single(cls, committee: Committee) -> CommitteeSchedule:
        return cls([(1, committee)])

    @classmethod
    def of(cls, committee: Committee | CommitteeSchedule) -> CommitteeSchedule:
        return committee if isinstance(committee, CommitteeSchedule) else cls.single(committee)

    @property
    def chain_id(self) -> str:
        return self.epochs[0][1].chain_id

    def committee_for(self, height: int) -> Committee:
        chosen = self.epochs[0][1]
        for first, committee in self.epochs:
            if first > height:
                break
            chosen = committee
        return chosen


def certificate_threshold(committee: Committee) -> int:
    return committee.quorum if committee.is_bft else committee.majority


def verify_certificate(
    header: BlockHeader,
    certificate: QuorumCertificate,
    committee: Committee,
    block_hash: bytes | None = None,
) -> None:
    """Raise :class:`BlockError` unless ``certificate`` proves the block of ``header`` committed."""
    if committee.chain_id != header.chain_id:
        raise BlockError(
            header.height,
            f"committee is for chain {committee.chain_id!r}, block for {header.chain_id!r}",
        )
    if not committee.accepts_protocol(header.protocol):
        raise BlockError(
            header.height,
            f"block of protocol {header.protocol!r}; the committee runs {committee.protocol!r}",
        )
    if header.proposer >= committee.n:
        raise BlockError(header.height, f"proposer {header.proposer} is not a committee member")
    statement = header.commit_statement(block_hash)
    threshold = certificate_threshold(committee)
    try:
        if committee.is_bft:
            certificate.verify(committee, threshold=threshold, statement=statement)
        else:
            certificate.verify_acknowledgements(committee, threshold=threshold, statement=statement)
    except InvalidCertificate as exc:
        raise BlockError(header.height, f"certificate: {exc.reason}") from None


def verify_transactions(block: Block, *, check_signatures: bool = True) -> None:
    """Every transaction decodes; signed ones carry their client's valid signature."""
    height = block.height
    chain_id = block.header.chain_id
    for i, raw in enumerate(block.txs):
        try:
            tx = Transaction.decode(raw)
        except CodecError as exc:
            raise BlockError(height, f"transaction {i} is malformed: {exc}") from None
        if check_signatures and tx.is_signed and not tx.verify_signature(chain_id):
            raise BlockError(height, f"transaction {i} has an invalid client signature")


def verify_block(
    block: Block,
    *,
    chain_id: str,
    height: int,
    prev_hash: bytes,
    committee: Committee | CommitteeSchedule | None = None,
    check_transactions: bool = False,
) -> bytes:
    """Check one block against its expected place in the chain; return its hash."""
    header = block.header
    if header.chain_id != chain_id:
        raise BlockError(height, f"block is for chain {header.chain_id!r}, not {chain_id!r}")
    if header.height != height:
        raise BlockError(height, f"block claims height {header.height}")
    if header.prev_hash != prev_hash:
        raise BlockError(height, "previous-hash link is broken")
    if block.computed_root() != header.tx_root:
        raise BlockError(height, "Merkle root does not match the transactions")
    block_hash = header.hash()
    if isinstance(committee, CommitteeSchedule):
        committee = committee.committee_for(height)
    if committee is not None:
        verify_certificate(header, block.certificate, committee, block_hash)
    if check_transactions:
        verify_transactions(block)
    return block_hash


@dataclass(frozen=True, slots=True)
class ChainSummary:
    """What a verified chain (or verified prefix) holds."""

    chain_id: str
    height: int
    last_hash: bytes
    transactions: int
    certificates_checked: bool


def verify_chain(
    blocks: Iterable[Block],
    *,
    chain_id: str,
    committee: Committee | CommitteeSchedule | None = None,
    check_transactions: bool = False,
    start: tuple[int, bytes] | None = None,
) -> ChainSummary:
    """Verify blocks in order; raise :class:`BlockError` at the first bad one.

    From height 1 (linking to the genesis hash), or, with ``start=(height, hash)``, from the
    block after a trusted ``height`` whose hash is ``hash`` (to verify one segment). With a
    :class:`CommitteeSchedule`, each block is checked against the committee of its height.
    """
    height, prev = start if start is not None else (0, genesis_hash(chain_id))
    txs = 0
    for block in blocks:
        height += 1
        prev = verify_block(
            block,
            chain_id=chain_id,
            height=height,
            prev_hash=prev,
            committee=committee,
            check_transactions=check_transactions,
        )
        txs += len(block.txs)
    return ChainSummary(chain_id, height, prev, txs, committee is not None)

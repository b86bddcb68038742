"""Byzantine behaviour for the testbed only: a leader that equivocates.

Given a proposal it is about to broadcast, :func:`equivocate` returns a second, validly signed
proposal for the same view on the same QC, with a different block (the same transactions without
the last one). The testbed sends one to half the replicas and the other to the rest; honest
replicas vote for at most one, keep the pair as evidence, and never commit both. It signs with
the replica's key directly, around the safety rules: that is the point.
"""

from __future__ import annotations

from bft.core.interface import Signer
from crypto import Committee
from crypto.codec import Record
from ledger import make_header

from .messages import HotStuffBlock, Proposal, Statements


def equivocate(message: Record, signer: Signer, committee: Committee) -> Record | None:
    if not isinstance(message, Proposal) or not message.block.txs:
        return None
    block = message.block
    header = block.header
    txs = block.txs[:-1]
    other = make_header(
        chain_id=header.chain_id,
        height=header.height,
        prev_hash=header.prev_hash,
        txs=txs,
        protocol=header.protocol,
        view=header.view,
        proposer=header.proposer,
    )
    statement = Statements(committee.chain_id).proposal_digest(header.view, other.hash())
    return Proposal(
        block=HotStuffBlock(header=other, txs=txs, justify=block.justify),
        tc=message.tc,
        signature=signer.sign_digest(statement),
        certificates=message.certificates,
    )

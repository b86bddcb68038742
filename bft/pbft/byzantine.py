"""Byzantine behaviour for the testbed only: a primary that equivocates.

Given a pre-prepare it is about to broadcast, :func:`equivocate` returns a second, validly signed
pre-prepare for the same view and sequence number with a different proposal (the same requests
without the last one, or a null request). The testbed sends one to half the replicas and the
other to the rest; honest replicas must not commit both, and keep the pair as evidence.
"""

from __future__ import annotations

from bft.core.interface import Signer
from crypto import Committee
from crypto.codec import Record

from .messages import PrePrepare, Proposal, Statements


def equivocate(message: Record, signer: Signer, committee: Committee) -> Record | None:
    if not isinstance(message, PrePrepare) or message.proposal.view != message.view:
        return None
    proposal = message.proposal
    other = Proposal(
        seq=proposal.seq, view=proposal.view, proposer=proposal.proposer, txs=proposal.txs[:-1]
    )
    digest = other.digest()
    statement = Statements(committee.chain_id).pre_prepare_digest(message.view, message.seq, digest)
    return PrePrepare(
        view=message.view, seq=message.seq, proposal=other, signature=signer.sign_digest(statement)
    )

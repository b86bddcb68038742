"""What proves a HotStuff replica equivocated: two proposals for one view with different blocks,
or two votes for one view with different blocks, both signed by it."""

from __future__ import annotations

from bft.core.evidence import EvidenceError
from crypto import Committee, short_hex
from crypto.codec import Record

from .messages import Proposal, Statements, Vote


def check(first: Record, second: Record, committee: Committee, signer: int) -> str:
    st = Statements(committee.chain_id)
    if isinstance(first, Proposal) and isinstance(second, Proposal):
        if first.view != second.view:
            raise EvidenceError("the proposals are for different views")
        hashes = [p.block.header.hash() for p in (first, second)]
        for p, h in zip((first, second), hashes, strict=True):
            if not committee.verify_signature(signer, st.proposal_digest(p.view, h), p.signature):
                raise EvidenceError(f"a signature is not replica {signer}'s")
        kind = "proposals"
    elif isinstance(first, Vote) and isinstance(second, Vote):
        if first.view != second.view:
            raise EvidenceError("the votes are for different views")
        hashes = [first.block_hash, second.block_hash]
        for v in (first, second):
            if not committee.verify_signature(
                signer, st.vote_digest(v.view, v.height, v.block_hash), v.signature
            ):
                raise EvidenceError(f"a signature is not replica {signer}'s")
        kind = "votes"
    else:
        raise EvidenceError(
            f"{type(first).__name__} and {type(second).__name__} cannot conflict "
            "(evidence is two proposals or two votes)"
        )
    if hashes[0] == hashes[1]:
        raise EvidenceError("the messages are for the same block: no equivocation")
    return (
        f"replica {signer} signed two {kind} for view {first.view}: "
        f"blocks {short_hex(hashes[0])} and {short_hex(hashes[1])}"
    )

"""What proves a PBFT replica equivocated: two pre-prepares (or two prepares, or two commits)
for one view and sequence number with different digests, both signed by it."""

from __future__ import annotations

from bft.core.evidence import EvidenceError
from crypto import Committee, short_hex
from crypto.codec import Record

from .messages import Commit, Prepare, PrePrepare, Statements

KINDS = {PrePrepare: "pre-prepares", Prepare: "prepares", Commit: "commits"}


def check(first: Record, second: Record, committee: Committee, signer: int) -> str:
    kind = type(first)
    if kind not in KINDS or type(second) is not kind:
        raise EvidenceError(
            f"{type(first).__name__} and {type(second).__name__} cannot conflict "
            "(evidence is two pre-prepares, two prepares or two commits)"
        )
    if (first.view, first.seq) != (second.view, second.seq):  # type: ignore[attr-defined]
        raise EvidenceError("the messages are for different views or sequence numbers")
    st = Statements(committee.chain_id)
    digests = []
    for message in (first, second):
        if isinstance(message, PrePrepare):
            digest = message.proposal.digest()
            statement = st.pre_prepare_digest(message.view, message.seq, digest)
        elif isinstance(message, Prepare):
            digest = message.digest
            statement = st.prepare_digest(message.view, message.seq, digest)
        else:
            digest = message.digest  # type: ignore[attr-defined]
            statement = st.commit_digest(message.view, message.seq, digest)  # type: ignore[attr-defined]
        if not committee.verify_signature(signer, statement, message.signature):  # type: ignore[attr-defined]
            raise EvidenceError(f"a signature is not replica {signer}'s")
        digests.append(digest)
    if digests[0] == digests[1]:
        raise EvidenceError("the messages agree (same digest): no equivocation")
    return (
        f"replica {signer} signed two {KINDS[kind]} for view {first.view} "  # type: ignore[attr-defined]
        f"sequence {first.seq}: {short_hex(digests[0])} and {short_hex(digests[1])}"  # type: ignore[attr-defined]
    )

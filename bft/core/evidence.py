"""Evidence of equivocation: two conflicting messages signed by one replica.

A replica that signs two different proposals (or votes) for the same view and slot has broken
the protocol, and the two signed messages prove it to anyone holding the committee file: no
trust in the replica that found them is needed. Cores notice such pairs while they work (and
refuse the second message); the runtime wraps each pair in an :class:`Evidence` record, checks
it with the protocol's checker (so a bug can never turn into an accusation), and saves it.

Each BFT protocol gives its :class:`~bft.core.interface.ProtocolSpec` an ``evidence`` checker::

    check(first, second, committee, signer) -> str

that returns a one-line description when ``first`` and ``second`` are messages of one kind and
one slot with different contents, both validly signed by ``signer`` under ``committee``, and
raises :class:`EvidenceError` (naming what is wrong) otherwise. Raft has no signatures and no
evidence.
"""

from __future__ import annotations

from collections.abc import Callable

from crypto import MAX_COMMITTEE, Committee
from crypto.codec import Bytes, CodecError, Record, RecordUnion, Text, UInt, record, wire

MAX_EVIDENCE_MESSAGE = 16 * 1024 * 1024


class EvidenceError(ValueError):
    """The pair does not prove an equivocation; the message says why."""


Checker = Callable[[Record, Record, Committee, int], str]


@record(tag=0x28)
class Evidence(Record):
    """Two messages ``signer`` signed that conflict, as ``observer`` received them."""

    protocol: str = wire(Text(32))
    chain_id: str = wire(Text(128))
    signer: int = wire(UInt(MAX_COMMITTEE - 1))
    observer: int = wire(UInt(MAX_COMMITTEE - 1))
    first: bytes = wire(Bytes(min_size=1, max_size=MAX_EVIDENCE_MESSAGE))
    second: bytes = wire(Bytes(min_size=1, max_size=MAX_EVIDENCE_MESSAGE))


def verify_evidence(
    evidence: Evidence, committee: Committee, messages: RecordUnion, check: Checker | None
) -> str:
    """Check ``evidence`` against ``committee``; return its description or raise
    :class:`EvidenceError`."""
    if check is None:
        raise EvidenceError(f"{evidence.protocol} has no signed messages to equivocate with")
    if evidence.chain_id != committee.chain_id:
        raise EvidenceError(
            f"evidence of chain {evidence.chain_id!r}, committee of {committee.chain_id!r}"
        )
    if not 0 <= evidence.signer < committee.n:
        raise EvidenceError(f"replica {evidence.signer} is not in a committee of {committee.n}")
    if evidence.first == evidence.second:
        raise EvidenceError("the two messages are the same message")
    try:
        first = messages.decode(evidence.first)
        second = messages.decode(evidence.second)
    except CodecError as exc:
        raise EvidenceError(f"undecodable message: {exc}") from None
    return check(first, second, committee, evidence.signer)


def find_signer(
    first: Record, second: Record, committee: Committee, check: Checker
) -> tuple[int, str] | None:
    """The replica whose signatures make ``(first, second)`` evidence, and its description;
    ``None`` when no member's do (evidence is rare: trying each member is cheap enough)."""
    for signer in range(committee.n):
        try:
            return signer, check(first, second, committee, signer)
        except EvidenceError:
            continue
    return None

"""HotStuff's records: every message survives the strict codec, malformed ones do not decode,
the signature domains are distinct, and the genesis convention is exact."""

from __future__ import annotations

import pytest

from bft.core.messages import BlockRequest
from bft.hotstuff import (
    SPEC,
    CommitCertificate,
    CommitVote,
    CommitVotes,
    FetchBlocks,
    FetchedBlocks,
    HotStuffBlock,
    Proposal,
    SafetyState,
    Status,
    Timeout,
    Vote,
    genesis_qc,
    round_of,
)
from crypto.codec import CodecError, Record
from ledger import genesis_hash

from .chain import CHAIN, GENESIS, KEYS, ST, N, block_on, propose, qc_of, tc_of, timeout, tx

B1 = block_on(GENESIS, 1, txs=[tx(1), tx(2)])
QC1 = qc_of(B1)
H1 = B1.header.hash()
CV = CommitVote(height=1, view=1, block_hash=H1, signature=KEYS[0].sign_digest(b"\x00" * 32))
VOTE = Vote(
    view=1, height=1, block_hash=H1, signature=KEYS[0].sign_digest(b"\x01" * 32), commits=(CV,)
)

SAMPLES: list[Record] = [
    propose(B1),
    propose(block_on(QC1, 3), tc=tc_of(2, QC1)),
    VOTE,
    timeout(2, 3, QC1, high_tc=tc_of(2, QC1), vote=VOTE),
    timeout(0, 1, GENESIS),
    CommitCertificate(height=1, view=1, block_hash=H1, certificate=QC1.votes),
    CommitVotes(votes=(CV, CV)),
    FetchBlocks(block_hash=H1, count=5),
    FetchedBlocks(height=3, blocks=(B1,)),
    Status(height=2, view=7, high_qc=QC1, high_tc=None),
    BlockRequest(start=1, count=2),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_messages_round_trip(message: Record) -> None:
    assert SPEC.messages.decode(message.encode()) == message


def test_durable_records_round_trip() -> None:
    state = SafetyState(last_voted_view=4, last_proposed_view=3, last_proposed_hash=H1, lock=QC1)
    for record in (state, B1):
        assert SPEC.log_records.decode(record.encode()) == record


def test_block_transaction_count_must_match_header() -> None:
    with pytest.raises(CodecError, match="transactions"):
        HotStuffBlock(header=B1.header, txs=B1.txs[:1], justify=GENESIS)


def test_timeout_previous_signature_shape() -> None:
    good = timeout(1, 2, GENESIS)
    with pytest.raises(CodecError, match="previous"):
        Timeout(
            view=2,
            high_qc=GENESIS,
            high_tc=None,
            vote=None,
            commits=(),
            signature=good.signature,
            previous=b"",
        )
    with pytest.raises(CodecError, match="previous"):
        Timeout(
            view=1,
            high_qc=GENESIS,
            high_tc=None,
            vote=None,
            commits=(),
            signature=good.signature,
            previous=good.previous,
        )


def test_genesis_qc_is_exact() -> None:
    qc = genesis_qc(CHAIN, N)
    assert (qc.view, qc.height, qc.block_hash) == (0, 0, genesis_hash(CHAIN))
    assert qc.votes.signer_count == 0 and not qc.votes.signatures
    assert qc.votes.statement == ST.vote_digest(0, 0, genesis_hash(CHAIN))
    assert genesis_qc("other-chain", N) != qc


def test_domains_are_distinct() -> None:
    digests = {
        ST.vote_digest(1, 1, H1),
        ST.timeout_digest(1),
        ST.proposal_digest(1, H1),
        ST.commit_digest(1, 1, H1),
    }
    assert len(digests) == 4
    assert ST.commit_digest(1, 1, H1) == B1.header.commit_statement(H1)


def test_round_of_is_the_view() -> None:
    assert round_of(propose(B1)) == 1
    assert round_of(VOTE) == 1
    assert round_of(timeout(0, 5, QC1)) == 5
    assert round_of(Status(height=0, view=9, high_qc=QC1, high_tc=None)) == 9
    assert round_of(FetchBlocks(block_hash=H1, count=1)) is None
    assert round_of(CommitVotes(votes=())) is None


def test_equivocate_hook_makes_a_validly_signed_conflicting_proposal() -> None:
    from .chain import COMMITTEE

    proposal = propose(B1)
    assert SPEC.equivocate is not None
    other = SPEC.equivocate(proposal, KEYS[1], COMMITTEE)
    assert isinstance(other, Proposal)
    h2 = other.block.header.hash()
    assert h2 != H1 and other.block.header.view == 1
    assert COMMITTEE.verify_signature(1, ST.proposal_digest(1, h2), other.signature)
    assert SPEC.equivocate(propose(block_on(GENESIS, 1)), KEYS[1], COMMITTEE) is None
    assert SPEC.equivocate(VOTE, KEYS[1], COMMITTEE) is None

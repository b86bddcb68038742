"""The safety rules on their own (after Aptos' safety-rules suite): one vote per view, no vote
after a timeout, the lock and the voting rule of chained HotStuff (PODC'19, section 5), no
equivocating proposal, and all of it across a restart from the persisted state only."""

from __future__ import annotations

import pytest

from bft.core.errors import SafetyViolation
from bft.hotstuff import HotStuffBlock, SafetyRules, SafetyState
from crypto.codec import Record

from .chain import CHAIN, GENESIS, KEYS, ST, block_on, qc_of


def rules(persisted: list[Record] | None = None, replica: int = 3) -> SafetyRules:
    return SafetyRules(KEYS[replica], CHAIN, GENESIS, persisted or [])


# A certified chain b1 <- b2 <- b3 in views 1, 2, 3, and a fork f2 off b1 in view 4.
B1 = block_on(GENESIS, 1)
QC1 = qc_of(B1)
B2 = block_on(QC1, 2)
QC2 = qc_of(B2)
B3 = block_on(QC2, 3)
QC3 = qc_of(B3)
F4 = block_on(QC1, 4, proposer=0)


def test_votes_once_per_view() -> None:
    r = rules()
    signature, state = r.sign_vote(B1)
    assert state.last_voted_view == 1
    header = B1.header
    digest = ST.vote_digest(1, 1, header.hash())
    assert KEYS[3].public_key.verify_digest(digest, signature)
    other = block_on(GENESIS, 1, txs=[b"\x01"])
    assert "already voted" in r.vote_refusal(other)
    with pytest.raises(SafetyViolation):
        r.sign_vote(other)
    assert "already voted" in r.vote_refusal(B1)  # not even the same block twice


def test_views_only_go_up() -> None:
    r = rules()
    r.sign_vote(B2)
    assert r.vote_refusal(B1)  # an older view
    assert r.vote_refusal(B3) == ""


def test_no_vote_after_timing_out_in_the_view() -> None:
    r = rules()
    signature, state = r.sign_timeout(1)
    assert state is not None and state.last_voted_view == 1
    assert KEYS[3].public_key.verify_digest(ST.timeout_digest(1), signature)
    assert "already voted or timed out" in r.vote_refusal(B1)
    # A timeout for an older view (helping others form a TC) changes nothing.
    assert r.sign_timeout(1)[1] is None


def test_block_must_extend_its_qc() -> None:
    r = rules()
    on_b2 = block_on(QC2, 5)
    mismatched = HotStuffBlock(header=on_b2.header, txs=(), justify=QC1)  # header on b2, QC of b1
    assert "does not extend" in r.vote_refusal(mismatched)
    same_view = block_on(QC2, 2)
    assert "not above its QC" in r.vote_refusal(same_view)
    assert r.vote_refusal(block_on(QC1, 2)) == ""


def test_lock_moves_to_the_two_chain_head() -> None:
    """On a QC for b'' the replica locks on b''.justify (the paper's b_lock <- b')."""
    r = rules()
    assert r.lock == GENESIS
    assert r.observe_qc(B2) is not None  # QC(b2) seen: lock on b2.justify = QC(b1)
    assert r.lock == QC1
    state = r.observe_qc(B3)
    assert state is not None and state.lock == QC2
    assert r.observe_qc(B2) is None  # never backwards


def test_voting_rule_extends_lock_or_newer_qc() -> None:
    r = rules()
    r.observe_qc(B3)  # locked on QC(b2), view 2
    # A fork off b1 (justify view 1 < lock view 2, not the locked block): refused.
    assert "conflicts with the lock" in r.vote_refusal(F4)
    # A block on the locked block itself: accepted.
    assert r.vote_refusal(block_on(QC2, 4, proposer=0)) == ""
    # A block whose QC is newer than the lock: accepted (liveness), even on another branch.
    assert r.vote_refusal(block_on(QC3, 5, proposer=1)) == ""


def test_state_survives_a_restart() -> None:
    """A restarted replica, built from what it persisted, never votes twice in a view nor
    against its lock."""
    r = rules()
    persisted: list[Record] = []
    persisted.append(r.observe_qc(B3))  # type: ignore[arg-type]
    _, state = r.sign_vote(block_on(QC2, 4, proposer=0))
    persisted.append(state)
    again = rules(persisted)
    assert again.last_voted_view == 4
    assert again.lock == QC2
    conflicting = block_on(QC2, 4, proposer=0, txs=[b"\x02"])
    assert "already voted" in again.vote_refusal(conflicting)
    with pytest.raises(SafetyViolation):
        again.sign_vote(conflicting)
    assert "conflicts with the lock" in again.vote_refusal(block_on(QC1, 5, proposer=1))


def test_restart_reads_records_in_any_order() -> None:
    old = SafetyState(
        last_voted_view=3, last_proposed_view=2, last_proposed_hash=b"a" * 32, lock=QC2
    )
    new = SafetyState(last_voted_view=7, last_proposed_view=1, last_proposed_hash=b"", lock=QC1)
    r = rules([old, new])
    assert r.last_voted_view == 7
    assert r.lock == QC2  # the higher lock wins whatever the order
    assert r.state.last_proposed_view == 2


def test_never_signs_two_proposals_for_one_view() -> None:
    r = rules(replica=1)
    h1 = B1.header.hash()
    signature, state = r.sign_proposal(1, h1)
    assert KEYS[1].public_key.verify_digest(ST.proposal_digest(1, h1), signature)
    r.sign_proposal(1, h1)  # the same proposal again is fine
    with pytest.raises(SafetyViolation):
        r.sign_proposal(1, b"\x05" * 32)
    again = SafetyRules(KEYS[1], CHAIN, GENESIS, [state])
    assert again.proposal_refusal(1, b"\x05" * 32)
    assert again.proposal_refusal(0, h1)
    assert again.proposal_refusal(2, b"\x05" * 32) == ""


def test_commit_votes_never_name_two_blocks_at_one_height() -> None:
    r = rules()
    h = B1.header.hash()
    signature = r.sign_commit(1, 1, h)
    assert KEYS[3].public_key.verify_digest(B1.header.commit_statement(h), signature)
    with pytest.raises(SafetyViolation):
        r.sign_commit(1, 1, b"\x09" * 32)


def test_an_early_commit_vote_binds_nothing_but_never_contradicts_a_commit() -> None:
    """Signed early (with the vote for a grandchild), a commit vote does not stop the replica
    from signing the block actually committed at that height (2f+1 early votes would have
    committed theirs, so fewer were given); it is never signed against a committed block."""
    r = rules()
    h = B1.header.hash()
    early = r.sign_early_commit(1, 1, b"\x09" * 32)  # a block that never gathers 2f+1
    assert KEYS[3].public_key.verify_digest(ST.commit_digest(1, 1, b"\x09" * 32), early)
    assert r.sign_commit(1, 1, h) == r.sign_early_commit(1, 1, h)  # the same statement
    with pytest.raises(SafetyViolation):
        r.sign_early_commit(1, 1, b"\x09" * 32)


def test_signatures_are_domain_separated() -> None:
    r = rules()
    vote, _ = r.sign_vote(B1)
    h = B1.header.hash()
    pk = KEYS[3].public_key
    assert not pk.verify_digest(ST.timeout_digest(1), vote)
    assert not pk.verify_digest(ST.proposal_digest(1, h), vote)
    assert not pk.verify_digest(B1.header.commit_statement(h), vote)
    assert not pk.verify_digest(ST.vote_digest(2, 1, h), vote)

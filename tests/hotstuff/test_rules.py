"""Chained HotStuff's rules on one core, as transcripts tied to the paper (Yin et al., PODC'19):
the voting rule and the lock (section 5, ``safeNode`` and ``update``), the 3-chain commit over
consecutive views, gapped views, QC verification before anything else (forged QCs of every kind
change nothing), the pacemaker's timeout certificates and backoff, ledger certificates made of
commit votes, vote deduplication, equivocation evidence, and no second vote after a restart."""

from __future__ import annotations

import itertools

import pytest

from bft.core.admission import UNSIGNED_UNDER_A_KEY
from bft.core.messages import BlockRequest
from bft.core.ready import BROADCAST, Reply
from bft.core.requests import Request
from bft.hotstuff import (
    QC,
    TC,
    CommitCertificate,
    CommitVote,
    CommitVotes,
    FetchBlocks,
    FetchedBlocks,
    HotStuffBlock,
    HotStuffConfig,
    Proposal,
    SafetyState,
    Status,
    Timeout,
    Vote,
)
from bft.hotstuff.core import STATUS_BACKOFF
from crypto import Committee, Domain, QuorumCertificate
from crypto.codec import CodecError
from ledger import Block, verify_block

from .chain import (
    CHAIN,
    COMMITTEE,
    CONFIG,
    GENESIS,
    KEYS,
    LEADERS,
    ST,
    Driver,
    N,
    block_on,
    certificate_for,
    driver,
    leader,
    make_core,
    propose,
    qc_of,
    tc_of,
    timeout,
    tx,
)

# A chain in consecutive views 1..5, one transaction in the first block.
B1 = block_on(GENESIS, 1, txs=[tx(1)])
QC1 = qc_of(B1)
B2 = block_on(QC1, 2)
QC2 = qc_of(B2)
B3 = block_on(QC2, 3)
QC3 = qc_of(B3)
B4 = block_on(QC3, 4)
QC4 = qc_of(B4)
B5 = block_on(QC4, 5)


def commit_vote(signer: int, block=B1) -> CommitVote:  # type: ignore[no-untyped-def]
    header = block.header
    h = header.hash()
    return CommitVote(
        height=header.height,
        view=header.view,
        block_hash=h,
        signature=KEYS[signer].sign_digest(header.commit_statement(h)),
    )


def test_votes_go_to_the_next_leader_after_the_state_is_durable() -> None:
    d = driver()
    d.step(leader(1), propose(B1))
    (vote,) = d.sent(Vote, to=leader(2))
    assert (vote.view, vote.height, vote.block_hash) == (1, 1, B1.header.hash())
    assert COMMITTEE.verify_signature(3, ST.vote_digest(1, 1, B1.header.hash()), vote.signature)
    # The Ready that carries the vote persists the safety state and the block first.
    ready = next(r for r in d.readies if any(isinstance(o.message, Vote) for o in r.messages))
    states = [p for p in ready.persist if isinstance(p, SafetyState)]
    assert states and states[-1].last_voted_view == 1
    assert B1 in ready.persist
    assert d.core.view == 2  # it waits for the next leader's proposal in view 2


def test_three_chain_over_consecutive_views_commits() -> None:
    """b <- b' <- b'' in views 1, 2, 3; QC(b'') (carried by b4) commits b."""
    d = driver()
    for block in (B1, B2, B3):
        d.step(leader(block.view), propose(block))
    votes = d.votes()
    assert [v.commits for v in votes[:2]] == [(), ()]
    # The vote for b3 carries b1's commit vote: a QC on b3 commits b1 (sign_early_commits).
    assert [(c.height, c.block_hash) for c in votes[2].commits] == [(1, B1.header.hash())]
    assert votes[2].commits[0] == commit_vote(3)
    assert d.core.decided_at == {}  # not committed here yet
    assert d.core.safety.lock == QC1  # QC(b2) seen: locked on b2.justify
    d.step(leader(4), propose(B4))
    assert d.core.safety.lock == QC2
    last = d.votes()[-1]
    assert last.view == 4
    # b1's (now committed) and, early, b2's: a QC on b4 commits b2.
    assert [(c.height, c.block_hash) for c in last.commits] == [
        (1, B1.header.hash()),
        (2, B2.header.hash()),
    ]
    assert not d.committed  # committed, but not certified yet: nothing in the ledger
    # Commit votes of two more replicas make the ledger certificate.
    d.step(0, CommitVotes(votes=(commit_vote(0),)))
    d.step(1, CommitVotes(votes=(commit_vote(1),)))
    (block,) = d.committed
    assert block.header == B1.header and block.txs == B1.txs
    verify_block(
        block,
        chain_id=block.header.chain_id,
        height=1,
        prev_hash=GENESIS.block_hash,
        committee=COMMITTEE,
    )
    assert block.certificate.signer_ids == (0, 1, 3)
    replies = [r for ready in d.readies for r in ready.replies]
    assert replies == [Reply(b"client-a", 1, 1, 0)]


def test_commit_votes_sent_with_the_votes_for_a_grandchild_certify_a_view_sooner() -> None:
    """The leader that makes QC(b3) also gets b1's commit votes with the votes: it makes b1's
    ledger certificate at once and sends it on (in its proposal, when it has one to make), a
    view before the commit votes signed on seeing QC(b3) would reach the next leader."""
    # Replica 3 leads view 4 (it proposed none of b1-b3), so it collects the votes of view 3.
    d = driver(replica=3, config=HotStuffConfig(leaders={**LEADERS, 4: 3}))
    for block in (B1, B2, B3):
        d.step(leader(block.view), propose(block))
    h3 = B3.header.hash()
    for r in (0, 2):
        vote = Vote(
            view=3,
            height=3,
            block_hash=h3,
            signature=KEYS[r].sign_digest(ST.vote_digest(3, 3, h3)),
            commits=(commit_vote(r),),
        )
        d.step(r, vote)
    # Certified on the votes of view 3: before this change the commit votes left with the
    # votes of view 4, for the leader of view 5.
    (block,) = d.committed
    assert block.header == B1.header
    verify_block(block, chain_id=CHAIN, height=1, prev_hash=GENESIS.block_hash, committee=COMMITTEE)
    # Nothing is left to propose here, so the certificate goes out on its own (a leader with
    # work carries it in its proposal).
    (cert,) = d.sent(CommitCertificate)
    assert (cert.height, cert.block_hash) == (1, B1.header.hash())


def test_gapped_views_do_not_commit() -> None:
    """b1 (view 1) <- b2 (view 2) <- b4 (view 4, after a TC of view 3) <- b5 <- b6: the chains
    b1, b2, b4 and b2, b4, b5 have a gap, so nothing commits until b4, b5, b6 (consecutive) get
    their 3-chain, which commits b4 and its ancestors b1, b2."""
    g4 = block_on(QC2, 4)
    qc_g4 = qc_of(g4)
    g5 = block_on(qc_g4, 5)
    qc_g5 = qc_of(g5)
    g6 = block_on(qc_g5, 6)
    qc_g6 = qc_of(g6)
    g7 = block_on(qc_g6, 7)
    d = driver()
    d.step(leader(1), propose(B1))
    d.step(leader(2), propose(B2))
    d.step(leader(4), propose(g4, tc=tc_of(3, QC2)))
    d.step(leader(5), propose(g5))
    d.step(leader(6), propose(g6))
    assert [v.view for v in d.votes()] == [1, 2, 4, 5, 6]
    assert all(not v.commits for v in d.votes()[:4])
    # The vote for g6 carries the commit votes a QC on it would commit (g4, b1, b2) early.
    assert [c.height for c in d.votes()[-1].commits] == [1, 2, 3]
    assert d.core.status().extra["decided"] == 0
    d.step(leader(7), propose(g7))
    assert [c.height for c in d.votes()[-1].commits] == [1, 2, 3, 4]  # and g5's, early
    assert d.core.status().extra["decided"] == 3


def test_consecutive_views_are_checked_not_only_parent_links() -> None:
    """Parent links b1 <- b2 <- b3' hold, but b3' is in view 4: no commit on QC(b3')."""
    b3 = block_on(QC2, 4)
    b4 = block_on(qc_of(b3), 5)
    d = driver()
    d.step(leader(1), propose(B1))
    d.step(leader(2), propose(B2))
    d.step(leader(4), propose(b3, tc=tc_of(3, QC2)))
    d.step(leader(5), propose(b4))
    assert all(not v.commits for v in d.votes())


def test_voting_rule_lock_and_newer_qc() -> None:
    """Locked on b2 (view 2): a fork on b1 is refused; a block whose QC is newer than the lock
    is voted for, on whatever branch (the fork's block is fetched first, accepted with its
    QC)."""
    d = driver()
    for block in (B1, B2, B3, B4):
        d.step(leader(block.view), propose(block))
    assert d.core.safety.lock == QC2
    fork = block_on(QC1, 6, txs=[tx(7)])  # on b1: conflicts with the lock
    d.step(leader(6), propose(fork, tc=tc_of(5, QC4)))
    assert d.core.rejections.count("block conflicts with the lock") == 1
    assert [v.view for v in d.votes()] == [1, 2, 3, 4]
    # A certified block x on b1 in view 7, then y on QC(x) (newer than the lock) in view 9.
    x = block_on(QC1, 7, txs=[tx(8)])
    y = block_on(qc_of(x), 9)
    d.clear()
    d.step(leader(9), propose(y, tc=tc_of(8, qc_of(x))))
    (fetch,) = d.sent(FetchBlocks)
    assert fetch.block_hash == x.header.hash()
    assert not d.votes()
    d.step(leader(9), FetchedBlocks(height=0, blocks=(x,)))
    (vote,) = d.votes()
    assert vote.view == 9 and vote.block_hash == y.header.hash()


def forged(kind: str) -> QC:
    """QC(b1) made wrong in one way."""
    header = B1.header
    h = header.hash()
    statement = ST.vote_digest(1, 1, h)
    sign = lambda i, st=statement: (i, KEYS[i].sign_digest(st))  # noqa: E731
    if kind == "too few":
        votes = QuorumCertificate.from_votes(statement, [sign(0), sign(1)], N)
    elif kind == "unknown signer":
        good = QuorumCertificate.from_votes(statement, [sign(0), sign(1)], N)
        votes = QuorumCertificate(
            statement=statement,
            signers=bytes([good.signers[0] | 1 << 6]),
            signatures=(*good.signatures, KEYS[2].sign_digest(statement)),
        )
    elif kind == "wrong view":
        other = ST.vote_digest(2, 1, h)
        votes = QuorumCertificate.from_votes(other, [sign(i, other) for i in (0, 1, 2)], N)
    elif kind == "wrong domain":
        other = Domain(header.chain_id, "pbft/prepare").digest(b"\x83\x01\x01" + h)
        votes = QuorumCertificate.from_votes(other, [sign(i, other) for i in (0, 1, 2)], N)
    elif kind == "wrong domain, right statement field":
        other = Domain(header.chain_id, "hotstuff/timeout").digest(b"\x81\x01")
        votes = QuorumCertificate(
            statement=statement,
            signers=QuorumCertificate.from_votes(statement, [sign(0), sign(1), sign(2)], N).signers,
            signatures=tuple(KEYS[i].sign_digest(other) for i in (0, 1, 2)),
        )
    elif kind == "bad signature":
        good = QuorumCertificate.from_votes(statement, [sign(0), sign(1), sign(2)], N)
        votes = QuorumCertificate(
            statement=statement,
            signers=good.signers,
            signatures=(*good.signatures[:2], KEYS[3].sign_digest(statement)),
        )
    elif kind == "unsigned":
        votes = QuorumCertificate.unsigned(statement, [0, 1, 2], N)
    elif kind == "genesis lookalike":
        return QC(view=0, height=0, block_hash=b"\x00" * 32, votes=GENESIS.votes)
    else:
        raise AssertionError(kind)
    return QC(view=1, height=1, block_hash=h, votes=votes)


FORGERIES = [
    "too few",
    "unknown signer",
    "wrong view",
    "wrong domain",
    "wrong domain, right statement field",
    "bad signature",
    "unsigned",
    "genesis lookalike",
]


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_qc_in_a_proposal_changes_nothing(kind: str) -> None:
    d = driver()
    d.step(leader(1), propose(B1))
    before = (d.core.view, d.core.high_qc, d.core.safety.state, len(d.core.tree), len(d.log))
    d.clear()
    qc = forged(kind)
    header = B2.header
    bad = block_on(qc, 2) if kind != "genesis lookalike" else block_on(qc, 2, txs=[tx(2)])
    assert header is not None
    d.step(leader(2), propose(bad))
    after = (d.core.view, d.core.high_qc, d.core.safety.state, len(d.core.tree), len(d.log))
    assert after == before
    assert d.out == []
    assert d.core.rejections.count("justify QC") == 1


def test_a_repeated_signer_cannot_be_expressed() -> None:
    """A signer bitmap names each replica at most once; a list of signatures longer than the
    bitmap does not decode; a tally never counts a replica's vote twice."""
    statement = ST.vote_digest(1, 1, B1.header.hash())
    with pytest.raises(ValueError, match="twice"):
        QuorumCertificate.from_votes(
            statement, [(0, KEYS[0].sign_digest(statement))] * 2 + [(1, b"\x00" * 64)], N
        )
    two = QuorumCertificate.from_votes(
        statement, [(i, KEYS[i].sign_digest(statement)) for i in (0, 1)], N
    )
    with pytest.raises(CodecError, match="2 signers but 3 signatures"):
        QuorumCertificate(
            statement=statement,
            signers=two.signers,
            signatures=(*two.signatures, two.signatures[0]),
        )


def test_next_leader_counts_each_voter_once() -> None:
    d = driver(replica=leader(2))  # replica 2 leads view 2
    d.step(leader(1), propose(B1))  # it votes for b1, to itself
    h = B1.header.hash()
    vote0 = Vote(
        view=1,
        height=1,
        block_hash=h,
        signature=KEYS[0].sign_digest(ST.vote_digest(1, 1, h)),
        commits=(),
    )
    d.clear()
    d.step(0, vote0)
    d.step(0, vote0)
    forged_vote = Vote(
        view=1,
        height=1,
        block_hash=h,
        signature=KEYS[0].sign_digest(ST.vote_digest(1, 1, h)),
        commits=(),
    )
    d.step(3, forged_vote)  # replica 0's signature sent by replica 3
    assert not d.sent(Proposal)
    assert d.core.rejections.count("bad vote signature") == 1
    vote1 = Vote(
        view=1,
        height=1,
        block_hash=h,
        signature=KEYS[1].sign_digest(ST.vote_digest(1, 1, h)),
        commits=(),
    )
    d.step(1, vote1)
    (proposal,) = d.sent(Proposal)
    assert proposal.view == 2
    assert proposal.block.justify.votes.signer_ids == (0, 1, 2)
    assert proposal.block.header.prev_hash == h


def test_a_vote_for_a_view_with_a_qc_is_dropped_unverified() -> None:
    d = driver(replica=leader(2))  # replica 2 leads view 2 and collects view 1's votes
    d.step(leader(1), propose(B1))  # its own vote
    h = B1.header.hash()
    other = block_on(GENESIS, 1, txs=[tx(9)]).header.hash()

    def vote(key: int, block_hash: bytes, *, forged: bool = False) -> Vote:
        sig = bytes(64) if forged else KEYS[key].sign_digest(ST.vote_digest(1, 1, block_hash))
        return Vote(view=1, height=1, block_hash=block_hash, signature=sig, commits=())

    d.step(3, vote(3, h, forged=True))  # no QC yet: checked
    assert d.core.rejections.count("bad vote signature") == 1
    d.step(0, vote(0, h))
    d.step(1, vote(1, h))
    assert d.sent(Proposal) and d.core.high_qc.view == 1  # the QC is made
    d.step(3, vote(3, h, forged=True))  # nothing to add to it: not checked
    d.step(3, vote(3, other, forged=True))  # nor to any QC of view 1
    assert d.core.late_votes == 2
    assert d.core.rejections.count("bad vote signature") == 1


def test_timeouts_make_a_tc_with_the_highest_qc() -> None:
    """f+1 timeouts make a replica time out too; 2f+1 make a TC carrying the highest QC among
    them, and the replica enters the next view."""
    d = driver()
    d.step(leader(1), propose(B1))
    d.step(leader(2), propose(B2))  # voted in view 2: now in view 3, waiting
    assert d.core.view == 3 and d.core.high_qc == QC1
    d.clear()
    d.step(0, timeout(0, 3, QC2))  # replica 0 knows QC(b2)
    assert d.core.high_qc == QC2
    assert not d.sent(Timeout)
    d.step(1, timeout(1, 3, QC1))  # f+1 = 2 timeouts: join
    (mine,) = d.sent(Timeout)
    assert mine.view == 3 and mine.high_qc == QC2
    assert mine.vote is not None and mine.vote.view == 2  # our vote for b2, for anyone to use
    assert d.core.safety.last_voted_view == 3  # no vote in view 3 any more
    tc = d.core.high_tc
    assert tc is not None and tc.view == 3 and tc.high_qc == QC2
    assert set(tc.votes.signer_ids) == {0, 1, 3}
    assert d.core.tc_refusal(tc) == ""
    assert d.core.view == 4
    assert d.core.status().extra["view_changes"] == 1


def test_tc_verification_failures() -> None:
    d = driver()
    good = tc_of(3, QC2)
    assert d.core.tc_refusal(good) == ""
    too_few = tc_of(3, QC2, signers=(0, 1))
    assert "2 signers, 3 required" in d.core.tc_refusal(too_few)
    wrong_view = TC(view=4, votes=good.votes, high_qc=QC2)
    assert "another statement" in d.core.tc_refusal(wrong_view)
    not_earlier = tc_of(2, QC2)
    assert "earlier view" in d.core.tc_refusal(not_earlier)
    bad_qc = tc_of(3, forged("too few"))
    assert "QC" in d.core.tc_refusal(bad_qc)


def test_silent_next_leader_qc_is_rebuilt_from_timeouts() -> None:
    """The votes for b2 went to a leader that stays silent; the timeouts of view 3 carry them,
    so every replica makes QC(b2) itself."""
    d = driver()
    d.step(leader(1), propose(B1))
    d.step(leader(2), propose(B2))
    h = B2.header.hash()

    def vote_of(i: int) -> Vote:
        return Vote(
            view=2,
            height=2,
            block_hash=h,
            signature=KEYS[i].sign_digest(ST.vote_digest(2, 2, h)),
            commits=(),
        )

    d.step(1, timeout(1, 3, QC1, vote=vote_of(1)))
    d.step(2, timeout(2, 3, QC1, vote=vote_of(2)))
    assert d.core.high_qc.view == 2 and d.core.high_qc.block_hash == h
    assert set(d.core.high_qc.votes.signer_ids) == {1, 2, 3}


def test_equivocating_leader_gets_one_vote_and_leaves_evidence() -> None:
    d = driver()
    other = block_on(GENESIS, 1, txs=[tx(9)])
    d.step(leader(1), propose(B1))
    d.step(leader(1), propose(other))
    assert [v.block_hash for v in d.votes()] == [B1.header.hash()]
    assert d.core.status().extra["evidence"] == 1
    first, second = d.core.evidence[0]
    assert first.block == B1 and second.block == other


def test_no_vote_for_repeated_or_committed_requests() -> None:
    d = driver()
    d.step(leader(1), propose(B1))  # holds client-a#1
    again = block_on(QC1, 2, txs=[tx(1)])
    d.step(leader(2), propose(again))
    assert d.core.rejections.count("proposal holds a request already in an uncommitted") == 1
    twice = block_on(QC1, 3, txs=[tx(5), tx(5)])
    d.step(leader(3), propose(twice, tc=tc_of(2, QC1)))
    assert d.core.rejections.count("proposal holds a request twice") == 1
    assert [v.view for v in d.votes()] == [1]


def test_no_vote_for_an_unsigned_transaction_under_a_signing_clients_id() -> None:
    d = driver()
    d.step(leader(1), propose(block_on(GENESIS, 1, txs=[tx(1, client=b"k" * 32)])))
    assert not d.votes()
    assert d.core.rejections.count(f"proposal holds an {UNSIGNED_UNDER_A_KEY}") == 1


def test_only_the_leaders_proposal_has_its_signatures_checked_ahead() -> None:
    d = driver()
    proposal = propose(B1)
    assert list(d.core.transactions_to_verify(leader(1), proposal)) == list(B1.txs)
    assert list(d.core.transactions_to_verify((leader(1) + 1) % 4, proposal)) == []


def test_committed_requests_are_not_ordered_again() -> None:
    d = driver()
    for block in (B1, B2, B3, B4):
        d.step(leader(block.view), propose(block))
    d.step(0, CommitVotes(votes=(commit_vote(0),)))
    d.step(1, CommitVotes(votes=(commit_vote(1),)))
    assert len(d.committed) == 1
    d.step(leader(5), propose(block_on(QC4, 5, txs=[tx(1)])))
    assert d.core.rejections.count("proposal holds a committed or stale request") == 1


def test_certificates_from_peers_are_verified() -> None:
    d = driver()
    for block in (B1, B2, B3, B4):
        d.step(leader(block.view), propose(block))
    h = B1.header.hash()
    statement = B1.header.commit_statement(h)
    weak = QuorumCertificate.from_votes(
        statement, [(i, KEYS[i].sign_digest(statement)) for i in (0, 1)], N
    )
    d.step(0, CommitCertificate(height=1, view=1, block_hash=h, certificate=weak))
    assert not d.committed
    assert d.core.rejections.count("commit certificate") == 1
    good = QuorumCertificate.from_votes(
        statement, [(i, KEYS[i].sign_digest(statement)) for i in (0, 1, 2)], N
    )
    d.step(0, CommitCertificate(height=1, view=1, block_hash=h, certificate=good))
    assert [b.height for b in d.committed] == [1]


def test_restarted_replica_never_votes_twice_in_a_view() -> None:
    """Crash right after voting for b1 in view 1; the restarted replica, given a conflicting,
    validly signed proposal for view 1, does not vote."""
    d = driver()
    d.step(leader(1), propose(B1))
    assert len(d.votes()) == 1
    again = d.restart()
    assert again.core.safety.last_voted_view == 1
    assert B1.header.hash() in again.core.tree  # the voted block is back from the log
    conflicting = block_on(GENESIS, 1, txs=[tx(2)])
    again.step(leader(1), propose(conflicting))
    assert not again.votes()
    assert again.core.rejections.count("already voted") == 1
    # And it still takes part from the next view on.
    again.step(leader(2), propose(B2))
    assert [v.view for v in again.votes()] == [2]


def test_restarted_replica_keeps_its_lock() -> None:
    d = driver()
    for block in (B1, B2, B3, B4):
        d.step(leader(block.view), propose(block))
    again = d.restart()
    assert again.core.safety.lock == QC2
    fork = block_on(QC1, 6, txs=[tx(7)])
    again.step(leader(6), propose(fork, tc=tc_of(5, QC4)))
    assert not again.votes()
    assert again.core.rejections.count("block conflicts with the lock") == 1


def test_lagging_replica_fetches_certified_blocks_from_a_peer_ledger() -> None:
    """A replica that sees a proposal far above its ledger fetches the missing uncommitted
    blocks by hash and, when the peer has committed them, the certified ones by height."""
    d = driver()
    d.step(leader(5), propose(B5, tc=None))
    fetch = d.sent(FetchBlocks)
    assert fetch and fetch[0].block_hash == QC4.block_hash
    # The peer answers with blocks b4 and b3 and says its ledger holds 2 blocks.
    d.clear()
    d.step(leader(5), FetchedBlocks(height=2, blocks=(B4, B3)))
    requests = d.sent(BlockRequest)
    assert requests and requests[0].start == 1
    assert d.out[0][0] != BROADCAST


def test_restart_from_the_ledger_alone() -> None:
    """A replica whose protocol log is gone starts from its ledger: the tip is the root of its
    block tree, and the ledger's requests are known as committed."""
    h = B1.header.hash()
    statement = B1.header.commit_statement(h)
    certificate = QuorumCertificate.from_votes(
        statement, [(i, KEYS[i].sign_digest(statement)) for i in (0, 1, 2)], N
    )
    d = driver(ledger=[Block(header=B1.header, txs=B1.txs, certificate=certificate)])
    assert d.core.status().height == 1
    d.step(leader(2), propose(block_on(QC1, 2, txs=[tx(1)])))
    assert d.core.rejections.count("proposal holds a committed or stale request") == 1
    d.step(leader(3), propose(block_on(QC1, 3, txs=[tx(2)]), tc=tc_of(2, QC1)))
    (vote,) = d.votes()
    assert vote.view == 3 and vote.height == 2


def test_pacemaker_backoff_doubles_after_f_consecutive_tcs_and_is_capped() -> None:
    """Each view entered through a TC counts; f of them in a row are expected (faulty leaders),
    beyond that the view timeout doubles, up to the cap; a fresh QC resets it."""
    config = HotStuffConfig(leaders=CONFIG.leaders, view_timeout=10, max_view_timeout=50)
    d = driver(config=config)
    timeouts = [d.core.view_timeout()]
    for view in range(1, 7):
        d.step(0, timeout(0, view + 1, GENESIS, high_tc=tc_of(view, GENESIS)))
        assert d.core.view == view + 1
        timeouts.append(d.core.view_timeout())
    assert timeouts == [10, 10, 20, 40, 50, 50, 50]
    d.step(leader(7), propose(block_on(GENESIS, 8), tc=tc_of(7, GENESIS)))
    d.step(leader(9), propose(block_on(qc_of(block_on(GENESIS, 8)), 9)))
    assert d.core.view_timeout() == 10


def test_default_leaders_rotate_round_robin() -> None:
    core = driver(config=None).core
    assert [core.leader(v) for v in range(1, 9)] == [1, 2, 3, 0, 1, 2, 3, 0]
    pinned = driver(config=HotStuffConfig(leaders={5: 3})).core
    assert [pinned.leader(v) for v in (4, 5, 6)] == [0, 3, 2]


def test_forged_commit_votes_make_no_certificate() -> None:
    d = driver()
    for block in (B1, B2, B3, B4):
        d.step(leader(block.view), propose(block))
    h = B1.header.hash()
    wrong_key = CommitVote(
        height=1, view=1, block_hash=h, signature=KEYS[3].sign_digest(B1.header.commit_statement(h))
    )
    wrong_statement = CommitVote(
        height=1, view=1, block_hash=h, signature=KEYS[1].sign_digest(ST.vote_digest(1, 1, h))
    )
    d.step(0, CommitVotes(votes=(wrong_key,)))
    d.step(1, CommitVotes(votes=(wrong_statement,)))
    assert not d.committed
    assert d.core.rejections.count("bad commit vote signature") == 2
    d.step(2, CommitVotes(votes=(commit_vote(2),)))
    d.step(
        0, Vote(view=9, height=1, block_hash=h, signature=b"\x00" * 64, commits=(commit_vote(0),))
    )
    assert [b.height for b in d.committed] == [1]


def test_two_votes_of_one_voter_in_a_view_count_once_and_are_evidence() -> None:
    d = driver(replica=leader(2))  # the next leader of view 1 collects its votes
    other = block_on(GENESIS, 1, txs=[tx(9)])

    def vote(block: object, key: int) -> Vote:
        h = block.header  # type: ignore[attr-defined]
        sig = KEYS[key].sign_digest(ST.vote_digest(1, h.height, h.hash()))
        return Vote(view=1, height=h.height, block_hash=h.hash(), signature=sig, commits=())

    d.step(0, vote(B1, 0))
    d.step(0, vote(other, 0))  # replica 0 votes again in view 1, for another block
    d.step(3, vote(other, 3))
    d.step(1, vote(other, 1))
    # Replica 0's second vote is not counted: two honest votes for `other` make no QC.
    assert not d.sent(Proposal)
    assert d.core.rejections.count("equivocation: two votes for one view") == 1
    first, second = d.core.evidence[-1]
    assert (first.block_hash, second.block_hash) == (B1.header.hash(), other.header.hash())
    from bft.hotstuff import SPEC

    assert "replica 0 signed two votes for view 1" in SPEC.evidence(first, second, COMMITTEE, 0)  # type: ignore[misc]


def test_proposals_and_votes_of_earlier_views_are_refused_and_counted() -> None:
    """Late or replayed messages: a proposal of a view this replica has left gets no vote and
    is counted; so is a vote for a view two or more behind."""
    d = driver(replica=leader(2))  # it leads view 2: view-1 votes are sent to it
    for block in (B1, B2, B3, B4):
        d.step(leader(block.view), propose(block))
    assert d.core.view >= 4
    voted = len(d.votes())
    d.step(leader(1), propose(B1))  # a replayed proposal of view 1 (valid signatures)
    assert len(d.votes()) == voted
    assert d.core.rejections.count("proposal from an earlier view") == 1
    h = B1.header.hash()
    late = Vote(
        view=1,
        height=1,
        block_hash=h,
        signature=KEYS[0].sign_digest(ST.vote_digest(1, 1, h)),
        commits=(),
    )
    d.step(0, late)
    assert d.core.rejections.count("vote from an earlier view") == 1


def test_requests_proposed_together_share_one_block() -> None:
    # The leader of view 1 (its QC, genesis, is in hand) is given a client's frame of five
    # requests: one block holds all five, not a block for the first and a wait for the rest.
    d = driver(replica=leader(1))
    for seq in range(1, 6):
        assert d.core.propose(Request.from_raw(tx(seq))) == ""
    d.pump()
    (proposal,) = d.sent(Proposal)
    assert proposal.block.view == 1
    assert list(proposal.block.txs) == [tx(seq) for seq in range(1, 6)]


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the replica of every signature a committee verifies, in order."""
    checked: list[int] = []
    verify = Committee.verify_signature

    def counting(self: Committee, replica: int, digest: bytes, signature: bytes) -> bool:
        checked.append(replica)
        return verify(self, replica, digest, signature)

    monkeypatch.setattr(Committee, "verify_signature", counting)
    return checked


def _qc_for_b1_with_my_slot(signature: bytes | None) -> QC:
    """QC1 signed by 0, 1 and replica 3 (the core under test), 3's slot holding ``signature``
    (its real vote when ``None``)."""
    h = B1.header.hash()
    statement = ST.vote_digest(1, 1, h)
    votes = [(i, KEYS[i].sign_digest(statement)) for i in (0, 1)]
    votes.append((3, KEYS[3].sign_digest(statement) if signature is None else signature))
    return QC(
        view=1, height=1, block_hash=h, votes=QuorumCertificate.from_votes(statement, votes, N)
    )


def test_a_qc_holding_our_own_vote_is_checked_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    d = driver()
    d.step(leader(1), propose(B1))
    assert d.votes()[-1].view == 1  # replica 3 voted for B1
    checked = _count_verifications(monkeypatch)
    d.step(leader(2), propose(block_on(_qc_for_b1_with_my_slot(None), 2)))
    assert d.votes()[-1].view == 2
    # The proposal's signature, then the QC's votes of 0 and 1: ours is the one we signed.
    assert sorted(checked) == [0, 1, leader(2)]


def test_a_qc_with_another_signature_in_our_slot_is_refused() -> None:
    d = driver()
    d.step(leader(1), propose(B1))
    # Replica 3's slot holds its signature of another statement: checked, and refused.
    wrong = KEYS[3].sign_digest(ST.vote_digest(1, 1, B2.header.hash()))
    d.step(leader(2), propose(block_on(_qc_for_b1_with_my_slot(wrong), 2)))
    assert d.core.rejections.count("justify QC: invalid signature from replica 3") == 1
    assert [v.view for v in d.votes()] == [1]


def test_our_vote_stands_for_its_own_statement_only() -> None:
    # A QC naming B1 at another height: 0 and 1 signed that statement, and replica 3's slot
    # holds its real vote, which is over B1's true height. Its bytes are ours, but not for
    # this statement: checked, and refused.
    d = driver()
    d.step(leader(1), propose(B1))
    h = B1.header.hash()
    claimed = ST.vote_digest(1, 2, h)
    votes = [(i, KEYS[i].sign_digest(claimed)) for i in (0, 1)]
    votes.append((3, d.votes()[-1].signature))
    qc = QC(view=1, height=2, block_hash=h, votes=QuorumCertificate.from_votes(claimed, votes, N))
    d.step(0, Status(height=0, view=2, high_qc=qc, high_tc=None))
    assert d.core.rejections.count("status QC: invalid signature from replica 3") == 1
    assert d.core.high_qc.view == 0


@pytest.mark.parametrize("mine", ["ours", "another"])
def test_a_commit_certificate_holding_our_commit_vote_is_checked_without_it(
    mine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = driver()
    for block in (B1, B2, B3, B4):
        d.step(leader(block.view), propose(block))
    assert 1 in d.core.own_commits  # replica 3 committed B1 and signed its commit vote
    h = B1.header.hash()
    statement = B1.header.commit_statement(h)
    other = B2.header.commit_statement(B2.header.hash())
    votes = [(i, KEYS[i].sign_digest(statement)) for i in (0, 1)]
    votes.append((3, KEYS[3].sign_digest(statement if mine == "ours" else other)))
    certificate = QuorumCertificate.from_votes(statement, votes, N)
    checked = _count_verifications(monkeypatch)
    d.step(0, CommitCertificate(height=1, view=1, block_hash=h, certificate=certificate))
    if mine == "ours":
        assert sorted(checked) == [0, 1]
        assert [b.height for b in d.committed] == [1]
    else:
        assert sorted(checked) == [0, 1, 3]
        assert not d.committed
        assert d.core.rejections.count("commit certificate: invalid signature from replica 3") == 1


def _views_taking(d: Driver, ticks: int, views: range, justify: QC = GENESIS) -> QC:
    """Feed replica 3 a proposal (one transaction each) every ``ticks`` ticks; it votes in each
    and enters the next view. Returns the QC of the last block."""
    for view in views:
        for _ in range(ticks):
            d.core.tick()
            d.pump()
        block = block_on(justify, view, txs=[tx(view)])
        d.step(leader(view), propose(block))
        justify = qc_of(block)
    return justify


def _ticks_until_vote_resent(d: Driver, limit: int = 100) -> int:
    d.clear()
    for waited in range(1, limit + 1):
        d.core.tick()
        d.pump()
        if d.sent(Vote):
            return waited
    raise AssertionError(f"no vote re-sent within {limit} ticks")


def test_a_lost_vote_is_sent_again_after_the_minimum_interval_when_views_are_quick() -> None:
    config = HotStuffConfig(leaders=LEADERS, view_timeout=100, max_view_timeout=100)
    d = driver(config=config)
    _views_taking(d, 0, range(1, 9))
    assert d.core.retransmit_gap() == config.retransmit_interval == 3
    assert _ticks_until_vote_resent(d) == 3


def test_retransmission_waits_twice_as_long_as_recent_views_took_within_the_bounds() -> None:
    """Under load a view takes several ticks; re-sending after the fixed minimum only repeats
    what is on its way (at n=10 it doubled the messages per block)."""
    config = HotStuffConfig(
        leaders=LEADERS, view_timeout=100, max_view_timeout=100, max_retransmit_interval=20
    )
    d = driver(config=config)
    _views_taking(d, 6, range(1, 41))
    assert 5.5 < d.core.view_ticks <= 6
    assert d.core.retransmit_gap() == 12
    assert _ticks_until_vote_resent(d) == 12
    # Slower views stretch it up to the bound, and not beyond.
    d = driver(config=config)
    _views_taking(d, 30, range(1, 41))
    assert d.core.retransmit_gap() == 20
    assert _ticks_until_vote_resent(d) == 20
    # Views ended by a timeout certificate do not count: they are not how long a view takes.
    d = driver(config=config)
    qc = _views_taking(d, 1, range(1, 41))
    before = d.core.view_ticks
    for view in range(41, 45):
        for _ in range(50):
            d.core.tick()
        d.pump()
        d.step(0, timeout(0, view + 1, qc, high_tc=tc_of(view, qc)))
    assert d.core.view_ticks == before
    # Nor does a jump over views this replica never saw (a QC of a later view).
    d = driver(config=config)
    qc = _views_taking(d, 1, range(1, 41))
    before = d.core.view_ticks
    for _ in range(50):
        d.core.tick()
    d.pump()
    ahead = block_on(qc, 43, txs=[tx(43)])
    d.step(leader(44), propose(block_on(qc_of(ahead), 44, txs=[tx(44)])))
    assert d.core.view == 44  # from 41, by the QC of 43 (its block is fetched, not voted on)
    assert d.core.view_ticks == before


def test_uncertified_commit_votes_go_to_every_peer_once_per_interval() -> None:
    """Commit votes of decided blocks whose certificate has not come are broadcast again, but
    each round waits the whole interval: not once per tick, nor every 3 ticks under load."""
    config = HotStuffConfig(
        leaders=LEADERS, view_timeout=100, max_view_timeout=100, max_retransmit_interval=20
    )
    d = driver(config=config)
    _views_taking(d, 6, range(1, 41))
    assert d.core.own_commits  # decided blocks, no certificate given
    gap = d.core.retransmit_gap()
    assert gap == 12
    d.clear()
    rounds = []
    for t in range(1, 50):
        d.core.tick()
        d.pump()
        if d.sent(CommitVotes):
            rounds.append(t)
            d.clear()
    assert len(rounds) == 4 and rounds[0] <= gap
    assert [b - a for a, b in itertools.pairwise(rounds)] == [gap] * 3


def test_a_fixed_retransmit_interval_when_both_bounds_agree() -> None:
    config = HotStuffConfig(
        leaders=LEADERS,
        view_timeout=100,
        max_view_timeout=100,
        retransmit_interval=4,
        max_retransmit_interval=4,
    )
    d = driver(config=config)
    _views_taking(d, 9, range(1, 21))
    assert _ticks_until_vote_resent(d) == 4
    with pytest.raises(ValueError, match="max_retransmit_interval"):
        HotStuffConfig(retransmit_interval=5, max_retransmit_interval=4)


def test_next_leaders_are_those_of_the_current_view_and_the_views_after() -> None:
    """Where a replica tells clients to send new requests: distinct leaders from its current
    view on (a replica that voted is in the next view already), as many as asked for, and no
    more than the schedule has within n views."""
    core = make_core(1, config=HotStuffConfig())  # round robin: view v is led by v mod n
    assert core.view == 1
    assert core.next_leaders(3) == (1, 2, 3)
    assert core.next_leaders(4) == (1, 2, 3, 0)
    core.view = 6
    assert core.next_leaders(2) == (2, 3)
    scheduled = make_core(1)  # LEADERS: view v is led by v mod 3, so replica 3 never leads
    assert scheduled.next_leaders(3) == (1, 2, 0)
    assert scheduled.next_leaders(4) == (1, 2, 0)


def _ticks_with_status(d: Driver, ticks: int) -> list[int]:
    """Tick ``d`` ``ticks`` times; the ticks at which it broadcast its status."""
    sent = []
    for _ in range(ticks):
        d.core.tick()
        d.pump()
        if d.sent(Status):
            sent.append(d.core.now)
        d.clear()
    return sent


def test_an_idle_replica_gossips_an_unchanged_status_ever_less_often() -> None:
    """Idle and unchanged: the interval doubles after each status, up to STATUS_BACKOFF times
    the configured one; anything new brings it back at once."""
    d = driver()
    base = CONFIG.status_interval
    sent = _ticks_with_status(d, 1_000)
    assert sent[0] <= base
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps == [base, 2 * base, 4 * base, 8 * base, 16 * base, 16 * base]
    assert STATUS_BACKOFF == 16
    # A peer's status with a higher QC moves this replica to a later view: its own status
    # goes at the next tick (an interval has passed since the last), not at the long gap's end.
    d.step(0, Status(height=0, view=3, high_qc=QC2, high_tc=None))
    assert d.core.view == 3
    now = d.core.now
    assert sent[-1] + base < now < sent[-1] + 16 * base
    assert _ticks_with_status(d, 1) == [now + 1]
    # Work waiting (a request) keeps the interval at its base however long nothing changes.
    d.core.propose(Request.from_raw(tx(7)))
    d.pump()
    sent = _ticks_with_status(d, 8 * base)
    assert [b - a for a, b in itertools.pairwise(sent)] == [base] * (len(sent) - 1)
    assert len(sent) >= 7


def test_a_replica_whose_blocks_commit_sends_no_periodic_status() -> None:
    """While blocks reach the ledger every view, proposals and votes say what a status would;
    once commits stop (or a view times out) the status goes out again."""
    d = driver()
    base = CONFIG.status_interval
    blocks: dict[int, HotStuffBlock] = {}
    justify = GENESIS
    for view in range(1, 41):
        sent = _ticks_with_status(d, 4)
        assert not sent or view <= 6, (view, sent)  # only before the first commit
        block = block_on(justify, view, txs=[tx(view)])
        blocks[block.height] = block
        d.step(leader(view), propose(block))
        justify = qc_of(block)
        for height in sorted(d.core.own_commits):
            if height > d.core.ledger_height:
                d.step(0, certificate_for(blocks[height]))
    assert d.core.ledger_height >= 35
    # No more proposals: the blocks on the highest chain wait, and a status goes within an
    # interval of the last commit (the view times out later, and its timeout carries more).
    quiet_from = d.core.last_emit
    sent = _ticks_with_status(d, 2 * base)
    assert sent and sent[0] <= quiet_from + base + 1


def test_commit_votes_are_not_sent_again_while_the_ledger_grows() -> None:
    """Each certificate comes a few views after its block was decided (here three, views of 6
    ticks, re-send gap 12): the ledger grows every view, so the commit votes waiting for the
    next certificates are on their way and are not broadcast again. When the certificates stop
    coming, they are, one gap after the last block reached the ledger."""
    config = HotStuffConfig(
        leaders=LEADERS, view_timeout=100, max_view_timeout=100, max_retransmit_interval=20
    )
    d = driver(config=config)
    blocks: dict[int, HotStuffBlock] = {}
    justify = GENESIS
    resent: list[int] = []

    def views(numbers: range, certify: bool) -> None:
        nonlocal justify
        for view in numbers:
            for _ in range(6):
                d.core.tick()
                d.pump()
                if d.sent(CommitVotes) and view > 12:  # once the gap has settled
                    resent.append(d.core.now)
                d.clear()
            block = block_on(justify, view, txs=[tx(view)])
            blocks[block.height] = block
            d.step(leader(view), propose(block))
            justify = qc_of(block)
            waiting = sorted(h for h in d.core.own_commits if h > d.core.ledger_height)
            if certify and len(waiting) >= 4:
                d.step(0, certificate_for(blocks[waiting[0]]))
            d.clear()

    views(range(1, 41), certify=True)
    assert d.core.retransmit_gap() == 12
    assert d.core.ledger_height >= 30
    assert resent == []
    stalled_from = d.core.last_emit
    views(range(41, 51), certify=False)
    assert resent and resent[0] == stalled_from + 12
    assert [b - a for a, b in itertools.pairwise(resent)] == [12] * (len(resent) - 1)


def test_a_commit_vote_goes_again_only_once_it_has_waited_the_gap() -> None:
    """With no certificate coming, the commit votes re-sent are those signed (early, with a
    vote, or at the decision) at least a re-send gap ago: one signed with the last vote is on
    its way to the next leader and is not broadcast again at once."""
    config = HotStuffConfig(
        leaders=LEADERS, view_timeout=100, max_view_timeout=100, max_retransmit_interval=20
    )
    d = driver(config=config)
    justify = GENESIS
    signed: dict[int, tuple[CommitVote, int]] = {}  # height -> our vote, the tick it was signed
    checked = 0
    for view in range(1, 31):
        for _ in range(6):
            d.core.tick()
            d.pump()
            now, gap = d.core.now, d.core.retransmit_gap()
            for message in d.sent(CommitVotes):
                for vote in message.votes:
                    assert now - signed[vote.height][1] >= gap, (view, vote.height)
                due = [h for h, (_, t) in signed.items() if now - t >= gap]
                assert [v.height for v in message.votes] == sorted(due)[: len(message.votes)]
                checked += 1
            d.clear()
        block = block_on(justify, view, txs=[tx(view)])
        d.step(leader(view), propose(block))
        justify = qc_of(block)
        for height, vote in d.core.own_commits.items():
            if signed.get(height, (None, 0))[0] is not vote:
                signed[height] = (vote, d.core.now)
        d.clear()
    assert checked >= 5
    assert d.core.ledger_height == 0  # nothing certified: every vote kept waiting


def test_a_request_repeated_in_a_committed_block_is_answered_once() -> None:
    """Should a certified block hold a request twice (the voting rule refuses such a block, so
    only a quorum that broke it could certify one), the ledger keeps the block as certified,
    the client table records the first place, the client is answered once for it, and the
    repeat is counted."""
    d = driver()
    block = block_on(GENESIS, 1, txs=[tx(1), tx(2), tx(1), tx(1, client=b"client-b")])
    cert = certificate_for(block)
    d.core.commit_block(
        Block(header=block.header, txs=block.txs, certificate=cert.certificate), None
    )
    d.pump()
    replies = [r for ready in d.readies for r in ready.replies]
    assert replies == [
        Reply(b"client-a", 1, 1, 0),
        Reply(b"client-a", 2, 1, 1),
        Reply(b"client-b", 1, 1, 3),
    ]
    assert d.core.duplicates == 1
    assert [b.height for b in d.committed] == [1]
    assert d.core.clients.status(b"client-a", 1)[1] == (1, 0)

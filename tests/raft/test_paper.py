"""Raft's rules, tied to the sections of Ongaro & Ousterhout (USENIX ATC 2014) and, for pre-vote,
check-quorum and leadership transfer, to Ongaro's dissertation (2014).

Each test drives real cores by hand (tests/raft/harness.py), with the five Raft properties checked
after every step, and checks one rule; each would fail if its rule were removed (several show it
with a negative control).
"""

from __future__ import annotations

import pytest

from bft.core.requests import BatchPolicy
from bft.raft import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    AppendEntries,
    AppendReply,
    Entry,
    RaftConfig,
    RaftCore,
    RequestVote,
    TermRecord,
    VoteReply,
)
from ledger import verify_chain

from .harness import CHAIN, Cluster, log_of, request
from .properties import PropertyViolation

MANUAL = RaftConfig(check_quorum=False)
"""Elections happen only when a test calls them (no lease to wait out)."""


def rejections_from(c: Cluster, replica: int) -> int:
    return sum(1 for m in c.sent(AppendReply, src=replica) if not m.success)  # type: ignore[attr-defined]


# -------------------------------------------------------------------------------- 5.2 election


@pytest.mark.parametrize("n", [1, 3, 5])
def test_a_quiet_cluster_elects_exactly_one_leader(n: int) -> None:
    c = Cluster(n)
    c.run(45)
    leaders = [i for i in range(n) if c.core(i).role == LEADER]
    assert len(leaders) == 1
    leader = leaders[0]
    assert all(c.core(i).leader == leader for i in range(n))
    assert len({c.core(i).term for i in range(n)}) == 1


def test_election_timeouts_are_randomized_per_replica_and_seeded() -> None:
    def draws(seed: int, replica: int) -> list[int]:
        core = Cluster(5, RaftConfig(seed=seed)).core(replica)
        return [core.random_timeout() for _ in range(20)]

    cfg = RaftConfig()
    for replica in range(5):
        values = draws(1, replica)
        assert all(cfg.election_ticks <= v < 2 * cfg.election_ticks for v in values)
        assert draws(1, replica) == values  # replayable
        assert len(set(values)) > 1
    assert draws(1, 0) != draws(1, 1)
    assert draws(1, 0) != draws(2, 0)


VOTE = dict(last_index=0, last_term=0, pre=False, transfer=False)


def test_a_replica_votes_once_per_term() -> None:
    c = Cluster(3, MANUAL)
    core = c.core(0)
    table = [
        (1, 2, True),  # first request of term 2: granted
        (2, 2, False),  # another candidate, same term: refused
        (1, 2, True),  # the same candidate again (a retransmission): granted again
        (2, 3, True),  # a later term: a new vote
    ]
    for candidate, term, granted in table:
        core.step(candidate, RequestVote(term=term, **VOTE))
        c.drain(c.nodes[0])
        reply = c.sent(VoteReply, src=0)[-1]
        assert (reply.term, reply.granted) == (term, granted), (candidate, term)


def test_the_vote_is_durable_before_it_is_sent() -> None:
    c = Cluster(3, MANUAL)
    c.core(0).step(1, RequestVote(term=2, **VOTE))
    c.drain(c.nodes[0])
    ready = c.readies[-1][1]
    assert TermRecord(term=2, voted_for=1) in ready.persist
    assert any(isinstance(m.message, VoteReply) and m.message.granted for m in ready.messages)


def test_a_restarted_replica_does_not_vote_twice_in_a_term() -> None:
    c = Cluster(3, MANUAL)
    c.core(0).step(1, RequestVote(term=2, **VOTE))
    c.drain(c.nodes[0])
    c.crash(0)
    c.restart(0)
    assert (c.core(0).term, c.core(0).voted_for) == (2, 1)
    c.core(0).step(2, RequestVote(term=2, **VOTE))
    c.drain(c.nodes[0])
    assert not c.sent(VoteReply, src=0)[-1].granted


def test_a_candidate_that_hears_from_the_leader_of_its_term_follows_it() -> None:
    c = Cluster(3, RaftConfig(pre_vote=False, check_quorum=False))
    c.campaign(1)
    assert c.core(1).role == CANDIDATE and c.core(1).term == 1
    c.core(1).step(
        0,
        AppendEntries(
            term=1, prev_index=0, prev_term=0, entries=(), commit=0, acks_from=1, acks=()
        ),
    )
    c.drain(c.nodes[1])
    assert c.core(1).role == FOLLOWER and c.core(1).leader == 0


def test_a_leader_of_an_old_term_learns_the_new_term_and_steps_down() -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    c.isolate(0)
    c.elect(1)
    assert c.core(0).role == LEADER  # still thinks so: it heard nothing
    c.heal()
    c.propose(request(1, 1), to=[0])
    c.deliver()
    assert c.core(0).role == FOLLOWER and c.core(0).term == c.core(1).term
    assert c.core(1).role == LEADER


def test_split_votes_resolve() -> None:
    c = Cluster(4, RaftConfig(pre_vote=False))
    c.campaign(0)
    c.campaign(1)
    c.deliver()
    c.run(80)
    assert c.leader() is not None
    assert sum(c.core(i).role == LEADER for i in range(4)) == 1


# -------------------------------------------------------------------------------- 5.3 replication


def test_entries_commit_on_a_majority_and_become_the_same_blocks_everywhere() -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    for seq in range(1, 6):
        c.propose(request(1, seq))
        c.deliver()
    c.run(3)
    assert c.heights() == [5, 5, 5]  # five batches, no empty entry (nothing was pending)
    ledgers = [n.ledger for n in c.nodes]
    assert ledgers[0] == ledgers[1] == ledgers[2]  # byte-identical, certificates included
    verify_chain(ledgers[1], chain_id=CHAIN, committee=c.committee)
    for block in ledgers[0]:
        assert block.header.protocol == "raft" and block.header.proposer == 0
        assert block.header.view == c.core(0).term
        assert not block.certificate.is_signed
        assert block.certificate.signer_count >= c.committee.majority
    assert {r.seq for i, r in c.replies if i == 0} == {1, 2, 3, 4, 5}


def test_the_certificate_names_the_majority_that_stored_the_entry() -> None:
    c = Cluster(5, MANUAL)
    c.elect(0)
    c.crash(3)
    c.crash(4)
    c.propose(request(1, 1))
    c.deliver()
    assert c.heights() == [1, 0, 0, 0, 0]  # followers learn the commit index with the next message
    c.run(2)
    block = c.nodes[1].ledger[-1]
    assert block == c.nodes[0].ledger[-1]
    assert block.certificate.signer_ids == (0, 1, 2)


def test_entries_are_durable_before_they_are_acknowledged() -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    c.propose(request(1, 1), to=[0])
    c.deliver()
    for i, ready in c.readies:
        acks = [m.message for m in ready.messages if isinstance(m.message, AppendReply)]
        if i == 1 and any(a.success and a.index == 1 for a in acks):
            assert any(isinstance(r, Entry) and r.index == 1 for r in ready.persist)
            break
    else:
        raise AssertionError("replica 1 never acknowledged entry 1")


def test_a_follower_rejects_entries_that_do_not_match_and_gives_hints() -> None:
    leader = log_of([1, 1, 2, 2, 2])
    follower = log_of([1, 1, 3, 3])
    c = Cluster(3, MANUAL, logs={1: (3, follower)})
    core = c.core(1)
    table = [
        # prev_index, prev_term: expected (success, hint_index, hint_term)
        (5, 2, (False, 5, 0)),  # beyond the follower's log: retry from its end
        (4, 2, (False, 3, 3)),  # conflicting term 3 starts at index 3
        (2, 1, (True, 0, 0)),  # matches
    ]
    for prev, prev_term, expected in table:
        core.step(
            0,
            AppendEntries(
                term=3,
                prev_index=prev,
                prev_term=prev_term,
                entries=tuple(leader[prev : prev + 1]),
                commit=0,
                acks_from=1,
                acks=(),
            ),
        )
        c.drain(c.nodes[1])
        reply = c.sent(AppendReply, src=1)[-1]
        assert (reply.success, reply.hint_index, reply.hint_term) == expected, prev
    assert core.log.term_at(3) == 2 and core.log.last_index == 3  # the conflict was truncated


LEADER_7 = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7 = {
    # follower's log: rejections with fast backtracking, with one-by-one decrement
    "a": ([1, 1, 1, 4, 4, 5, 5, 6, 6], 1, 1),
    "b": ([1, 1, 1, 4], 1, 6),
    "c": ([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 0, 0),
    "d": ([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 0, 0),
    "e": ([1, 1, 1, 4, 4, 4, 4], 2, 5),
    "f": ([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 2, 7),
}


def figure_7(follower: list[int]) -> Cluster:
    """Figure 7: replica 0 holds the leader's log, replica 2 a copy (it votes for 0), replica 1
    one of the follower logs (a)-(f). Replica 0 is elected in term 8."""
    logs = {
        0: (7, log_of(LEADER_7)),
        1: (max(follower), log_of(follower)),
        2: (7, log_of(LEADER_7)),
    }
    c = Cluster(3, MANUAL, logs=logs)
    c.elect(0)
    c.run(4)
    return c


@pytest.mark.parametrize("case", sorted(FIGURE_7))
def test_figure_7_any_follower_log_converges_to_the_leaders(case: str) -> None:
    follower, fast, _ = FIGURE_7[case]
    c = figure_7(follower)
    leader, f = c.core(0), c.core(1)
    assert f.log.last_index == leader.log.last_index == 11
    assert f.log.last_hash == leader.log.last_hash
    assert c.heights() == [11, 11, 11]
    assert rejections_from(c, 1) == fast


@pytest.mark.parametrize("case", ["b", "e", "f"])
def test_fast_backtracking_saves_round_trips(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: backing off one entry per rejection (the paper's basic rule) costs a
    round trip per conflicting entry instead of one per conflicting term."""
    follower, fast, slow = FIGURE_7[case]
    monkeypatch.setattr(RaftCore, "next_after_rejection", lambda self, pr, m: m.index)
    c = figure_7(follower)
    assert c.core(1).log.last_hash == c.core(0).log.last_hash
    assert rejections_from(c, 1) == slow > fast


def test_replication_is_pipelined_and_batched() -> None:
    eager = BatchPolicy(partial_in_flight=0)  # a partial batch whenever the pipeline has room
    c = Cluster(3, RaftConfig(check_quorum=False, max_uncommitted=3, max_inflight=2, batch=eager))
    c.elect(0)
    c.deliver()
    hold = lambda s, d, m: not isinstance(m, AppendReply)  # noqa: E731
    for seq in range(1, 11):
        c.propose(request(1, seq), to=[0])
    leader = c.core(0)
    assert leader.log.last_index == 3  # the pipeline is full: three entries uncommitted
    assert list(leader.progress[1].inflight) == [1, 2]  # two AppendEntries out: the window
    to_1 = [m for m in c.sent(AppendEntries, src=0) if m.entries and m.prev_index < 3]
    assert [m.prev_index for m in to_1] == [0, 0, 1, 1]  # entries 1 and 2, to each follower
    c.deliver(hold)  # followers store entries 1 and 2; their acknowledgements are lost
    assert c.core(1).log.last_index == 2 and leader.commit == 0
    c.run(RaftConfig().stall_ticks + 6)  # the stall is noticed, then the rest in one batch
    sizes = [len(b.txs) for b in c.nodes[1].ledger]
    assert sizes == [1, 1, 1, 7]
    assert c.heights() == [4, 4, 4]


def test_partial_entries_wait_for_the_uncommitted_one() -> None:
    """Adaptive batching: while a partial entry is uncommitted, requests gather and follow it
    in one entry once it commits."""
    c = Cluster(3, RaftConfig(check_quorum=False, max_uncommitted=3, max_inflight=2))
    c.elect(0)
    c.deliver()
    for seq in range(1, 11):
        c.propose(request(1, seq), to=[0])
    assert c.core(0).log.last_index == 1  # the first request alone; the others wait
    c.deliver()
    assert c.core(0).log.last_index == 2  # committed: the nine waiting follow in one entry
    c.run(3)  # heartbeats carry the commit index to the followers
    assert [len(b.txs) for b in c.nodes[1].ledger] == [1, 9]


def test_entries_full_by_bytes_do_not_wait_for_the_uncommitted_one() -> None:
    """Adaptive batching holds back partial entries only: large requests that fill an entry's
    byte limit go out while one is uncommitted (pipelined), two to an entry here: the limit
    holds two and a half, so two leave once three wait."""
    size = request(1, 1, b"x" * 1000).size
    batch = BatchPolicy(max_txs=100, max_bytes=2 * size + size // 2)
    c = Cluster(3, RaftConfig(check_quorum=False, max_uncommitted=3, max_inflight=2, batch=batch))
    c.elect(0)
    c.deliver()
    for seq in range(1, 8):
        c.propose(request(1, seq, b"x" * 1000), to=[0])
    assert c.core(0).log.last_index == 3  # 1 alone, then 2 and 3, 4 and 5: the pipeline is full
    c.deliver()
    c.run(3)
    assert [len(b.txs) for b in c.nodes[1].ledger] == [1, 2, 2, 2]


# -------------------------------------------------------------------------------- 5.4.1 election restriction


@pytest.mark.parametrize(
    ("voter", "candidate", "granted"),
    [
        ([1, 1, 2], (2, 3), True),  # identical
        ([1, 1, 2], (2, 4), True),  # same last term, longer
        ([1, 1, 2], (2, 2), False),  # same last term, shorter
        ([1, 1, 2], (3, 1), True),  # later last term, however short
        ([1, 1, 2], (1, 9), False),  # earlier last term, however long
        ([], (0, 0), True),  # both empty
    ],
)
def test_election_restriction(voter: list[int], candidate: tuple[int, int], granted: bool) -> None:
    c = Cluster(3, MANUAL, logs={0: (max(voter, default=0), log_of(voter))})
    last_term, last_index = candidate
    for pre in (True, False):
        c.core(0).step(
            1,
            RequestVote(
                term=5, last_index=last_index, last_term=last_term, pre=pre, transfer=False
            ),
        )
        c.drain(c.nodes[0])
        reply = c.sent(VoteReply, src=0)[-1]
        assert reply.granted is granted and reply.pre is pre


# -------------------------------------------------------------------------------- 5.4.2 Figure 8


def figure_8() -> Cluster:
    """Figure 8 (c): S1 (replica 0) leads term 4 and has put its term-2 entry on a majority
    (S1, S2, S3) but its term-4 entry only on itself; S5 (replica 4) holds a term-3 entry at
    index 2 and is down. (S2 gets the term-2 entry from S1 here, so that S1 knows it has it.)"""
    logs = {
        0: (3, log_of([1, 2])),
        1: (3, log_of([1])),
        2: (3, log_of([1])),
        3: (3, log_of([1])),
        4: (3, log_of([1, 3])),
    }
    c = Cluster(5, RaftConfig(check_quorum=False, max_entries_per_message=1), logs=logs)
    c.crash(4)

    def only_old(src: int, dst: int, m: object) -> bool:
        """S4 hears nothing; the term-4 entry is stored nowhere but on S1."""
        if not isinstance(m, AppendEntries):
            return True
        if dst == 3:
            return False
        stores = c.core(dst).log.last_index >= m.prev_index  # else it is rejected unstored
        return not (stores and any(e.index >= 3 for e in m.entries))

    c.elect(0, keep=only_old)
    c.run(3, keep=only_old)
    s1 = c.core(0)
    assert s1.term == 4 and s1.log.last_term == 4
    assert [c.core(i).log.last_index for i in range(4)] == [3, 2, 2, 1]
    return c


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    c = figure_8()
    assert c.core(0).commit == 0  # index 2 is on 3 of 5, but of term 2
    # (d): S1 crashes; S5 is elected with S2, S3, S4 and overwrites index 2. Safe: it never
    # committed (the checker would flag a committed entry replaced).
    c.crash(0)
    c.restart(4)
    c.campaign(4)
    c.deliver()  # its pre-vote meets term 4 and it catches up on the term
    c.elect(4)
    c.run(3)
    for i in range(1, 5):
        assert c.core(i).log.term_at(2) == 3
    assert c.heights()[1:] == [3, 3, 3, 3]


def test_figure_8_a_current_term_entry_commits_and_protects_the_older_ones() -> None:
    c = figure_8()
    c.run(3)  # (e): S1 gets its term-4 entry onto a majority
    assert c.core(0).commit == 3
    c.crash(0)
    c.restart(4)
    for _ in range(3):
        c.campaign(4)
        c.deliver()
    assert c.core(4).role != LEADER  # S2, S3 refuse: their logs end in term 4
    c.run(60)
    leader = c.leader()
    assert leader is not None and leader != 4
    assert c.core(4).log.term_at(2) == 2  # S5's term-3 entry was overwritten


def test_negative_control_committing_old_term_entries_by_counting_breaks_safety(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the current-term rule, Figure 8 commits index 2 and then loses it: caught."""

    def unsafe_commit(self: RaftCore) -> None:
        if self.role != LEADER:
            return
        matches = sorted([self.log.last_index] + [p.match for p in self.progress.values()])
        index = matches[len(matches) - self.majority]
        if index > self.commit:
            for i in range(self.applied + 1, index + 1):
                self.acks.setdefault(i, b"\x1f")
            self.commit = index
            self.apply_committed()

    monkeypatch.setattr(RaftCore, "maybe_commit", unsafe_commit)
    c = figure_8()
    assert c.core(0).commit == 2
    c.crash(0)
    c.restart(4)
    c.campaign(4)
    c.deliver()
    with pytest.raises(PropertyViolation):
        c.elect(4)
        c.run(3)


# -------------------------------------------------------------------------------- pre-vote, check-quorum (dissertation 9.6)


def test_pre_vote_a_rejoining_replica_does_not_disrupt_a_healthy_leader() -> None:
    c = Cluster(3)
    c.run(40)
    leader = c.leader()
    assert leader is not None
    term = c.core(leader).term
    lost = next(i for i in range(3) if i != leader)
    c.isolate(lost)
    c.run(100)
    assert c.core(lost).pre_votes > 0 and c.core(lost).role == PRE_CANDIDATE
    assert c.core(lost).term == term  # pre-votes change no term
    c.heal()
    c.propose(request(1, 1))
    c.run(20)
    assert c.leader() == leader and c.core(leader).term == term
    assert c.core(lost).role == FOLLOWER and c.heights() == [1, 1, 1]


def test_negative_control_without_pre_vote_a_rejoining_replica_deposes_the_leader() -> None:
    c = Cluster(3, RaftConfig(pre_vote=False, check_quorum=False))
    c.run(40)
    leader = c.leader()
    assert leader is not None
    term = c.core(leader).term
    lost = next(i for i in range(3) if i != leader)
    c.isolate(lost)
    c.run(100)
    assert c.core(lost).term > term + 1
    c.heal()
    c.run(40)
    assert c.core(leader).term > term  # the rejoining replica's term forced a new election


def test_check_quorum_an_isolated_leader_steps_down_and_the_majority_moves_on() -> None:
    c = Cluster(3)
    c.run(40)
    old = c.leader()
    assert old is not None
    c.isolate(old)
    c.run(2 * RaftConfig().election_ticks + 1)
    assert c.core(old).role == FOLLOWER
    new = c.leader()
    assert new is not None and new != old and c.core(new).term > c.core(old).term


def test_leader_lease_a_follower_ignores_vote_requests_while_it_hears_the_leader() -> None:
    c = Cluster(3)
    c.run(40)
    leader = c.leader()
    assert leader is not None
    follower, other = (i for i in range(3) if i != leader)
    term = c.core(follower).term
    for pre in (True, False):
        c.core(follower).step(
            other,
            RequestVote(term=term + 1, last_index=99, last_term=term, pre=pre, transfer=False),
        )
        c.drain(c.nodes[follower])
    assert c.core(follower).term == term
    assert c.core(follower).rejections.count("vote request while the leader lease holds") == 2
    # A transfer the leader asked for is not held back by the lease.
    c.core(follower).step(
        other, RequestVote(term=term + 1, last_index=99, last_term=term, pre=False, transfer=True)
    )
    c.drain(c.nodes[follower])
    assert c.core(follower).term == term + 1 and c.core(follower).voted_for == other

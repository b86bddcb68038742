"""Raft for operators: leadership transfer, catching up from the ledger, recovery from disk,
protocol-log compaction, exactly-once requests, status, and the wire and disk records."""

from __future__ import annotations

import pytest

from bft.core.errors import LocalMisuse
from bft.core.messages import BlockRequest, Relay
from bft.core.requests import Request
from bft.protocols import spec
from bft.raft import (
    LEADER,
    SPEC,
    AppendEntries,
    AppendReply,
    CatchUp,
    Durable,
    Entry,
    Heartbeat,
    HeartbeatReply,
    NotLeader,
    RaftConfig,
    RequestVote,
    TermRecord,
    TimeoutNow,
    VoteReply,
)
from bft.raft.messages import MESSAGES, RECORDS
from crypto.codec import CodecError
from ledger import make_header, verify_chain

from .harness import CHAIN, Cluster, log_of, request

MANUAL = RaftConfig(check_quorum=False)


def count_in_ledger(c: Cluster, i: int, req: Request) -> int:
    return sum(block.txs.count(req.raw) for block in c.nodes[i].ledger)


# -------------------------------------------------------------------------------- leadership transfer


def test_transfer_to_an_up_to_date_follower() -> None:
    c = Cluster(3)
    c.elect(0)
    c.propose(request(1, 1))
    c.run(3)
    term = c.core(0).term
    c.core(0).transfer_leadership(2)
    c.drain(c.nodes[0])
    c.deliver()
    assert c.core(2).role == LEADER and c.core(2).term == term + 1
    assert c.core(0).role != LEADER
    assert len(c.sent(TimeoutNow, src=0)) == 1
    c.propose(request(1, 2))
    c.run(3)
    assert c.heights() == [2, 2, 2]


def test_transfer_catches_a_lagging_target_up_first_and_holds_new_entries() -> None:
    c = Cluster(3)
    c.elect(0)
    c.cut(0, 2)
    for seq in range(1, 6):
        c.propose(request(1, seq))
        c.run(1)
    assert c.core(2).log.last_index < c.core(0).log.last_index
    c.heal()
    c.core(0).transfer_leadership(2)
    c.drain(c.nodes[0])
    last = c.core(0).log.last_index
    c.propose(request(2, 1))  # while handing over, the leader appends nothing new
    assert c.core(0).log.last_index == last
    c.deliver()
    assert c.core(2).role == LEADER
    c.run(5)
    assert c.heights() == [6, 6, 6]  # five batches, then request (2, 1) under the new leader
    assert count_in_ledger(c, 1, request(2, 1)) == 1


def test_transfer_to_a_dead_target_gives_up_after_an_election_timeout() -> None:
    c = Cluster(3)
    c.elect(0)
    c.crash(2)
    c.core(0).transfer_leadership(2)
    c.drain(c.nodes[0])
    c.propose(request(1, 1))
    assert c.core(0).log.last_index == 0
    c.run(RaftConfig().election_ticks + 1)
    status = c.core(0).status()
    assert status.role == LEADER and status.extra["transfers_aborted"] == 1
    c.run(3)
    assert c.heights()[:2] == [1, 1]


def test_only_the_leader_transfers() -> None:
    c = Cluster(3)
    c.elect(0)
    with pytest.raises(NotLeader, match="replica 0 is the leader"):
        c.core(1).transfer_leadership(2)
    with pytest.raises(LocalMisuse):
        c.core(0).transfer_leadership(7)


# -------------------------------------------------------------------------------- catching up, recovery


def test_a_follower_far_behind_fetches_certified_blocks_from_the_leaders_ledger() -> None:
    c = Cluster(3, RaftConfig(check_quorum=False, log_retain=2))
    c.elect(0)
    c.crash(2)
    for seq in range(1, 21):
        c.propose(request(1, seq))
        c.run(1)
    assert c.core(0).log.base_index > 0  # compacted: the entries 2 lacks are only in the ledger
    c.restart(2)
    c.run(10)
    assert c.heights() == [20, 20, 20]
    assert c.nodes[2].ledger == c.nodes[0].ledger
    assert c.sent(CatchUp, src=0) and c.delivered["BlockRequest"] >= 1
    verify_chain(c.nodes[2].ledger, chain_id=CHAIN, committee=c.committee)


def test_committed_entries_kept_in_memory_are_bounded_in_bytes_too() -> None:
    """``log_retain`` counts entries, and an entry is a block of any size: the leader also
    forgets committed entries beyond ``log_retain_bytes`` of transactions (a follower needing
    them fetches them from the ledger), and keeps no decoded requests of applied ones."""
    limit = 20_000
    c = Cluster(3, RaftConfig(check_quorum=False, log_retain=256, log_retain_bytes=limit))
    c.elect(0)
    c.crash(2)
    for seq in range(1, 31):
        c.propose(request(1, seq, b"p" * 4000))
        c.run(1)
    leader = c.core(0)
    assert leader.applied == 30
    assert leader.log.held_bytes == sum(e.size for e in leader.log.entries)
    # Compacted as it applies: what the ledger holds durably is within the bound.
    durable = [e.size for e in leader.log.entries if e.index <= leader.durable_height]
    assert 0 < sum(durable) <= limit and leader.log.base_index >= 24
    assert all(e.requests == () for e in leader.log.entries if e.index <= leader.applied)
    c.restart(2)
    c.run(40)
    assert c.heights() == [30, 30, 30]
    assert c.nodes[2].ledger == c.nodes[0].ledger
    assert c.sent(CatchUp, src=0)


def test_a_fetched_block_with_a_bad_certificate_is_refused() -> None:
    c = Cluster(3, RaftConfig(check_quorum=False, log_retain=0))
    c.elect(0)
    c.crash(2)
    c.propose(request(1, 1))
    c.run(3)
    c.restart(2)
    from bft.core.messages import BlockResponse
    from crypto import QuorumCertificate

    good = c.nodes[0].ledger[0]
    forged = type(good)(
        header=good.header,
        txs=good.txs,
        certificate=QuorumCertificate.unsigned(good.certificate.statement, [0], 3),
    )
    c.core(2).step(0, BlockResponse(start=1, height=1, blocks=(forged,)))
    c.drain(c.nodes[2])
    assert c.heights()[2] == 0
    assert c.core(2).rejections.count("fetched block 1") == 1


def test_a_restarted_replica_recovers_its_term_vote_and_uncommitted_log() -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    c.crash(2)
    c.propose(request(1, 1))
    c.deliver(keep=lambda s, d, m: not isinstance(m, AppendReply))  # 1 stores, nothing commits
    before = c.core(1)
    assert before.log.last_index == 1 and before.commit == 0
    c.crash(1)
    c.restart(1)
    after = c.core(1)
    assert (after.term, after.voted_for) == (before.term, before.voted_for)
    assert after.log.last_hash == before.log.last_hash
    c.run(RaftConfig().stall_ticks + 4)  # the leader notices the lost acknowledgements
    assert c.heights()[:2] == [1, 1]


def test_only_a_leaders_own_new_entries_are_sent_before_they_are_durable() -> None:
    """Dissertation 10.2.1: ``send_first`` marks exactly the leader's Readies whose records are
    entries it appended. A term or vote, and a follower's stored entries (it acknowledges them),
    keep the order persist, then send, and so does a rewritten log (compaction)."""
    c = Cluster(3, RaftConfig(check_quorum=False, wal_compact_records=4))
    c.elect(0)
    for seq in range(1, 7):
        c.propose(request(1, seq), to=[0])
        c.run(2)
    rewrites = [(i, r.send_first) for i, r in c.readies if r.persist_replaces]
    assert (0, False) in rewrites and not any(first for _, first in rewrites)
    kinds = [
        (i, {type(r).__name__ for r in ready.persist}, ready.send_first)
        for i, ready in c.readies
        if ready.persist and not ready.persist_replaces
    ]
    assert (0, {"TermRecord"}, False) in kinds  # the candidate's term and vote
    assert (0, {"Entry"}, True) in kinds  # the leader's entry
    assert {(i, first) for i, names, first in kinds if names == {"Entry"}} == {
        (0, True),
        (1, False),
        (2, False),
    }
    assert all(r.send_first == bool(r.persist) and i == 0 for i, r in c.readies if r.send_first)


def test_a_leader_that_crashes_before_its_sent_entry_is_durable_never_leads_that_term() -> None:
    """The leader's entry left while it was being written, and the leader crashed before the
    write went through: it restarts as a follower of its term without the entry, the followers
    that stored it carry it, and a new leader of a later term commits it once."""
    c = Cluster(3, MANUAL)
    c.elect(0)
    leader = c.core(0)
    term = leader.term
    req = request(4, 1)
    leader.propose(req)
    ready = leader.ready()
    assert ready is not None and ready.send_first
    assert [type(r) for r in ready.persist] == [Entry]
    for out in ready.messages:  # sent; the crash comes before the write
        c.queue += [(0, t, out.message) for t in (1, 2) if out.to in (t, -1)]
    c.crash(0)
    c.deliver()  # 1 and 2 store the entry and acknowledge it to nobody
    assert [c.core(i).log.last_index for i in (1, 2)] == [1, 1]
    c.restart(0)
    restarted = c.core(0)
    assert restarted.role != LEADER and restarted.term == term
    assert restarted.log.last_index == 0  # the entry was never durable here
    c.elect(1)
    assert c.core(1).term > term
    c.run(4)
    assert [count_in_ledger(c, i, req) for i in range(3)] == [1, 1, 1]


def test_the_protocol_log_is_compacted_by_bytes_too() -> None:
    """Few records of large blocks: the record count never reaches its limit, the byte limit
    does, and the log is rewritten to its term and the entries not yet in the ledger."""
    cfg = RaftConfig(check_quorum=False, wal_compact_records=4096, wal_compact_bytes=20_000)
    c = Cluster(3, cfg)
    c.elect(0)
    payload = b"p" * 2_000  # about 2 KB a transaction, a block each
    for seq in range(1, 41):
        c.propose(request(1, seq, payload))
        c.run(1)
    assert any(ready.persist_replaces for _, ready in c.readies)
    for node in c.nodes:
        held = sum(sum(map(len, r.txs)) for r in node.wal if hasattr(r, "txs"))
        assert held < 20_000 and len(node.wal) < 20, (held, len(node.wal))
        assert node.core.wal_bytes < 20_000
    for i in range(3):
        c.crash(i)
        c.restart(i)
    c.run(40)
    c.propose(request(1, 41, payload))
    c.run(5)
    heights = c.heights()
    assert heights[0] == heights[1] == heights[2] >= 41


def test_wal_compaction_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="wal_compact_bytes"):
        RaftConfig(wal_compact_bytes=0)


def test_the_protocol_log_is_compacted_and_a_restart_reads_the_snapshot() -> None:
    c = Cluster(3, RaftConfig(check_quorum=False, wal_compact_records=16, log_retain=4))
    c.elect(0)
    for seq in range(1, 41):
        c.propose(request(1, seq))
        c.run(1)
    assert any(ready.persist_replaces for _, ready in c.readies)
    assert all(len(n.wal) < 40 for n in c.nodes)
    for i in range(3):
        c.crash(i)
        c.restart(i)
    c.run(40)
    c.propose(request(1, 41))
    c.run(5)
    heights = c.heights()
    assert heights[0] == heights[1] == heights[2] >= 41
    assert all(count_in_ledger(c, 0, request(1, seq)) == 1 for seq in range(1, 42))


def test_entries_below_the_commit_index_are_never_replaced() -> None:
    """Entries at or below a follower's commit index are committed, hence the leader's: an
    AppendEntries that disagrees there is skipped, not applied."""
    c = Cluster(3, MANUAL)
    c.elect(0)
    c.propose(request(1, 1))
    c.run(3)
    core = c.core(1)
    assert core.commit == 1
    kept = core.log.get(1)
    core.step(
        0,
        AppendEntries(
            term=core.term,
            prev_index=0,
            prev_term=0,
            entries=tuple(log_of([core.term])),
            commit=0,
            acks_from=1,
            acks=(),
        ),
    )
    c.drain(c.nodes[1])
    assert core.log.get(1) is kept
    assert c.sent(AppendReply, src=1)[-1].success


def test_a_fetched_block_that_contradicts_a_committed_entry_stops_the_replica() -> None:
    """A broken invariant, not bad input (the block's certificate was valid): fail loudly."""
    from bft.core.errors import SafetyViolation

    c = Cluster(3, MANUAL)
    c.elect(0)
    c.propose(request(1, 1))
    c.run(3)
    good = c.nodes[0].ledger[0]
    header = make_header(
        chain_id=CHAIN,
        height=1,
        prev_hash=good.header.prev_hash,
        txs=(),
        protocol="raft",
        view=9,
        proposer=0,
    )
    other = type(good)(header=header, txs=(), certificate=good.certificate)
    with pytest.raises(SafetyViolation, match="committed a different entry"):
        c.core(1).adopt_block(other)


# -------------------------------------------------------------------------------- exactly once


def test_a_retried_request_commits_once_and_is_answered_with_its_place() -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    req = request(1, 1)
    for _ in range(3):
        c.propose(req)
    c.run(3)
    c.propose(req)
    c.run(2)
    assert count_in_ledger(c, 0, req) == 1
    places = {(r.height, r.position) for _, r in c.replies if (r.client, r.seq) == req.id}
    assert places == {(1, 0)}


def test_a_new_leader_does_not_repeat_a_request_held_in_its_uncommitted_log() -> None:
    """Lesson from PBFT: filter where an entry's content is fixed, against the whole log."""
    c = Cluster(5, MANUAL)
    c.elect(0)
    req = request(7, 1)
    c.propose(req)  # every replica holds it in its pool, as clients send to all
    only_1 = lambda s, d, m: not isinstance(m, AppendEntries) or d == 1  # noqa: E731
    c.deliver(only_1)
    assert c.core(1).log.last_index == 1 and c.core(0).commit == 0
    c.crash(0)
    c.elect(1)  # its log holds the request's uncommitted entry; its pool holds the request too
    c.propose(req)  # and the client retries
    c.run(5)
    assert count_in_ledger(c, 1, req) == 1
    assert c.heights()[1:] == [2, 2, 2, 2]  # the old entry and the new leader's empty one


def test_stale_requests_are_refused() -> None:
    c = Cluster(3, RaftConfig(check_quorum=False, client_window=4))
    c.elect(0)
    for seq in range(1, 11):
        c.propose(request(1, seq))
        c.run(1)
    c.replies.clear()
    c.propose(request(1, 2, payload=b"late"), to=[0])
    assert [r.error for _, r in c.replies] == ["stale request: sequence number too far behind"]


# -------------------------------------------------------------------------------- requests reach the leader


def relayed(c: Cluster, src: int) -> list[tuple[bytes, ...]]:
    return [m.txs for m in c.sent(Relay, src=src)]  # type: ignore[attr-defined]


def test_a_request_sent_to_a_follower_alone_is_relayed_to_the_leader() -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    req = request(1, 1)
    c.propose(req, to=[1], alone=True)
    assert relayed(c, 1) == [(req.raw,)]
    c.run(3)
    assert c.heights() == [1, 1, 1] and count_in_ledger(c, 2, req) == 1
    assert (c.core(1).relayed, c.core(0).relayed_in) == (1, 1)
    # Sent to every replica, a request is not relayed: the leader has it.
    c.propose(request(1, 2))
    c.run(3)
    assert c.heights() == [2, 2, 2] and relayed(c, 1) == [(req.raw,)] and not relayed(c, 2)


def test_a_replica_that_learns_of_a_new_leader_relays_the_requests_it_holds() -> None:
    """The leader took a request its client sent to it alone and was cut off before anyone
    stored the entry; a new leader was elected without it. When the old leader hears from the
    new one it hands over the request, which commits once: nobody else ever had it."""
    c = Cluster(3, MANUAL)
    c.elect(0)
    c.isolate(0)
    req = request(1, 1)
    c.propose(req, to=[0], alone=True)
    c.run(2)
    assert c.core(0).log.last_index == 1 and c.core(0).commit == 0
    c.elect(1)
    c.heal()
    c.run(5)
    assert c.core(0).role != LEADER and relayed(c, 0) == [(req.raw,)]
    assert [count_in_ledger(c, i, req) for i in range(3)] == [1, 1, 1]


def test_only_the_leader_takes_relayed_requests_and_it_checks_them_as_a_clients() -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    follower = c.core(2)
    relay = Relay(txs=(request(1, 1).raw,))
    assert not follower.transactions_to_verify(1, relay)
    assert list(c.core(0).transactions_to_verify(1, relay)) == list(relay.txs)
    follower.step(1, relay)
    assert len(follower.mempool) == 0 and follower.relayed_in == 0
    leader = c.core(0)
    good = request(1, 2)
    leader.step(1, Relay(txs=(b"\x00not a transaction", good.raw)))
    assert leader.rejections.count("relayed transaction refused: malformed") == 1
    assert leader.relayed_in == 1
    c.drain(c.nodes[0])
    c.run(3)
    assert c.heights() == [1, 1, 1] and count_in_ledger(c, 1, good) == 1


# -------------------------------------------------------------------------------- status, records


def test_status() -> None:
    c = Cluster(3)
    c.run(40)
    leader = c.leader()
    assert leader is not None
    status = c.core(leader).status()
    assert (status.protocol, status.role, status.leader) == ("raft", "leader", leader)
    assert status.view == c.core(leader).term and status.extra["view_changes"] >= 1
    assert {c.core(i).status().role for i in range(3)} == {"leader", "follower"}


def test_spec() -> None:
    raft = spec("raft")
    assert raft is SPEC and not raft.byzantine and raft.min_replicas(1) == 3
    assert raft.round_of(Heartbeat(term=4, commit=0, acks_from=1, acks=())) == 4
    assert raft.round_of(BlockRequest(start=1, count=1)) is None


def test_record_tags_are_in_rafts_range_and_round_trip() -> None:
    entry = log_of([1])[0]
    samples = [
        entry,
        TermRecord(term=3, voted_for=None),
        TermRecord(term=3, voted_for=2),
        AppendEntries(
            term=2,
            prev_index=0,
            prev_term=0,
            entries=(entry,),
            commit=1,
            acks_from=1,
            acks=(b"\x03",),
        ),
        AppendReply(term=2, success=False, index=4, hint_index=2, hint_term=1, applied=0),
        Heartbeat(term=2, commit=1, acks_from=1, acks=()),
        HeartbeatReply(term=2, applied=1),
        RequestVote(term=2, last_index=1, last_term=1, pre=True, transfer=False),
        VoteReply(term=2, granted=True, pre=True),
        TimeoutNow(term=2),
        CatchUp(term=2, height=9),
    ]
    assert {type(s) for s in samples} == set(MESSAGES) | set(RECORDS)
    for record in samples:
        assert 0x70 <= record.TAG <= 0x8F
        union = SPEC.log_records if isinstance(record, RECORDS) else SPEC.messages
        assert union.decode(record.encode()) == record
    with pytest.raises(CodecError):  # a peer cannot send a log record as a message
        SPEC.messages.decode(entry.encode())


def test_an_entry_must_be_a_raft_block_in_the_making() -> None:
    header = make_header(
        chain_id=CHAIN, height=1, prev_hash=bytes(32), txs=(), protocol="pbft", view=1, proposer=0
    )
    with pytest.raises(CodecError):
        Entry(header=header, txs=())


def test_the_durable_log_keeps_the_last_write_at_each_index() -> None:
    a = log_of([1, 1, 1])
    b = log_of([1, 2])
    records = [TermRecord(term=1, voted_for=0), *a, TermRecord(term=2, voted_for=None), b[1]]
    state = Durable.load(records)
    assert (state.term, state.voted_for) == (2, None)
    assert [e.term for e in state.entries] == [1, 2]  # entry 2 of term 2 replaced 2 and 3
    # After a block fetch the log continues above the fetched blocks: a gap, and nothing older
    # is lost (the fetched blocks might not have been durable yet when the replica crashed).
    later = log_of([1, 2, 2, 2, 2])[4]
    assert [e.index for e in Durable.load([*a, later]).entries] == [1, 2, 3, 5]
    with pytest.raises(LocalMisuse):
        Durable.load([request(1, 1)])  # type: ignore[list-item]


def test_a_restart_keeps_the_entries_that_extend_the_ledger() -> None:
    """Entries above a gap (above fetched blocks that were not durable at the crash) were never
    acknowledged and are dropped; those that extend the ledger are kept."""
    c = Cluster(3, MANUAL, logs={1: (2, [*log_of([1, 1, 1]), log_of([1, 2, 2, 2, 2])[4]])})
    assert c.core(1).log.last_index == 3

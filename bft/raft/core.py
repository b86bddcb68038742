"""Raft, after Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm"
(USENIX ATC 2014), with pre-vote, check-quorum and leadership transfer from Ongaro's
dissertation (2014) and the flow control of etcd/raft. Section numbers refer to the paper.

Theory of operation
-------------------
Roles and terms (5.1, 5.2). A replica is a follower, a pre-candidate, a candidate or the leader.
A follower that hears from no leader for its election timeout (drawn per replica from a seeded
generator, in ticks) first asks for *pre-votes* for the term it would move to, without changing
its own term; only when a majority would vote for it does it start a real election: term + 1, a
vote for itself, RequestVote to all. A replica grants a vote once per term, to a candidate whose
log is at least as up to date as its own (5.4.1), and never while it hears from a live leader
(the leader lease of check-quorum), unless the leader itself asked for the election (leadership
transfer, TimeoutNow). So a replica that was cut off and rejoins cannot depose a healthy leader:
its pre-votes fail and its term never moved. A leader that has not heard from a majority for an
election timeout steps down. The term and the vote are persisted before any vote or reply that
depends on them is sent (they are in the same ``Ready``, whose ``persist`` the driver makes
durable first).

Log replication (5.3). Each log entry is a ledger block in the making: when the leader appends
it, it builds the block header (height = log index, ``prev_hash`` = the previous entry's block
hash, protocol ``raft``, view = term, proposer = leader), so the log is a hash chain. The leader
groups waiting client requests into an entry whenever fewer than ``max_uncommitted`` entries are
uncommitted (pipelining with batching: the longer the pipeline is full, the larger the next
batch). For each follower it keeps a progress record after etcd: *probe* (one AppendEntries at a
time until the follower's match index is known), *replicate* (optimistic: up to ``max_inflight``
AppendEntries in flight, the flow-control window) and *fetch* (the follower needs entries the
leader has compacted into its ledger: it fetches the certified blocks, see below). A follower
rejects an AppendEntries whose ``(prev_index, prev_term)`` it does not hold and replies with hints
- its term at ``prev_index`` and the first index of that term, or its last index - so that the
leader skips a whole conflicting term per round trip (fast backtracking, end of 5.3). Entries are
durable before the follower acknowledges them. The leader's own new entries are not: it sends
them while it writes them (dissertation 10.2.1, as etcd's leader does; ``Ready.send_first``), since
what a leader tells its followers does not vouch that it holds an entry, and a leader that
crashes before its write went through restarts as a follower of its term, which never leads that
term again. What relies on the leader's copy comes after the write: a follower's acknowledgement
is stepped only once the driver has finished the ``Ready``, and the ledger and the replies follow
the write within it. Heartbeats keep followers from timing out, tell them the commit index
(never above what the follower is known to hold), and prompt retransmission of what a follower
lacks after losses.

Commitment (5.4.2, Figure 8). The leader advances the commit index to the highest index stored
by a majority *whose entry is of the leader's current term*; earlier entries commit with it. A new
leader appends an empty entry when its log holds anything not yet applied, so that its first
commit comes promptly. When an entry commits, its acknowledgement set - the majority that stored
it, by the leader's progress records - becomes the block's certificate (an unsigned
``QuorumCertificate``). The leader sends these bitmaps to the followers with the commit index, and
every replica turns committed entries into ledger blocks in height order, replying to the clients
of each transaction.

Catching up. A follower that lags a little gets the entries in AppendEntries from its match
index. Entries the leader no longer holds in memory (it keeps ``log_retain`` committed ones) are in
its ledger: the leader tells the follower to fetch them (``CatchUp``), the follower asks with the
shared ``BlockRequest``, which the *driver* answers from the ledger, and verifies each block's hash
link and certificate before appending it. A restarted replica rebuilds its log from its protocol
log above its ledger.

Requests commit once. A leader never puts into an entry a request that is committed or already in
its log (the whole uncommitted suffix: after a change of leader that suffix holds entries of
earlier leaders). Every log is the log of some leader at the time it appended its last entry, so
no log, and no ledger, ever holds a request twice.

Requests reach the leader. A client sends a request to the leader it knows. A follower that admits
a request its client sent to it alone (a client that has not yet heard of a new leader) relays it
to the leader of its term (:class:`~bft.core.messages.Relay`, as etcd's followers forward
proposals), and a follower that learns of a new leader relays the requests it holds to it. The
leader admits relayed requests as it admits its clients' (size, form, signatures); the relaying
replica answers the client when the request commits.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from bft.core.base import CoreBase
from bft.core.errors import LocalMisuse, SafetyViolation
from bft.core.interface import CoreContext, CoreStatus
from bft.core.messages import MAX_BLOCKS_PER_RESPONSE, BlockRequest, BlockResponse, Relay
from bft.core.ready import Ready, Reply
from bft.core.requests import (
    ClientTable,
    Mempool,
    Request,
    RequestId,
    Status,
    requests_of,
)
from crypto import EMPTY_ROOT, QuorumCertificate, make_bitmap, merkle_root
from crypto.codec import CodecError, Record
from ledger import Block, BlockError, make_header, verify_certificate

from .config import RaftConfig
from .errors import NotLeader
from .log import LogEntry, RaftLog, term_of_block
from .messages import (
    MAX_ACKS_PER_MESSAGE,
    AppendEntries,
    AppendReply,
    CatchUp,
    Entry,
    Heartbeat,
    HeartbeatReply,
    RequestVote,
    TermRecord,
    TimeoutNow,
    VoteReply,
)
from .state import Durable

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"
PROBE, REPLICATE, FETCH = "probe", "replicate", "fetch"


@dataclass(slots=True)
class Progress:
    """What the leader knows of one follower (after etcd's ``tracker.Progress``)."""

    next: int
    match: int = 0
    state: str = PROBE
    paused: bool = False
    """In probe state: an AppendEntries is out and unanswered (one at a time)."""
    inflight: deque[int] = field(default_factory=deque)
    """In replicate state: the last index of each AppendEntries in flight."""
    applied: int | None = None
    """The follower's ledger height, once it said."""
    active: bool = True
    """Heard from during the current check-quorum period."""
    last_progress: int = 0
    """When the match index last moved, or the leader last started waiting for it to."""
    fetch_sent: int | None = None


@dataclass(slots=True)
class Transfer:
    target: int
    deadline: int


class RaftCore(CoreBase):
    protocol = "raft"

    def __init__(self, context: CoreContext) -> None:
        super().__init__(context)
        cfg = context.config if context.config is not None else RaftConfig()
        if not isinstance(cfg, RaftConfig):
            raise LocalMisuse(f"Raft needs a RaftConfig, got {type(cfg).__name__}")
        if self.committee.protocol != "raft":
            raise LocalMisuse(
                f"Raft needs a committee whose protocol is 'raft', not {self.committee.protocol!r}"
            )
        self.cfg = cfg
        self.n = self.committee.n
        self.majority = self.committee.majority
        self.peers = [r for r in range(self.n) if r != self.replica]
        self.rng = random.Random(f"raft/{cfg.seed}/{self.replica}")
        self.now = 0

        ledger = context.ledger
        base_term = term_of_block(ledger.recent[-1]) if ledger.recent else 0
        durable = Durable.load(context.persisted)
        self.term = max(durable.term, base_term)
        self.voted_for = durable.voted_for if durable.term == self.term else None
        self.log = RaftLog(ledger.height, base_term, ledger.last_hash)
        self.commit = self.applied = self.durable_height = ledger.height
        self.applied_hash = ledger.last_hash
        self.clients = self.start_client_table(ledger, ClientTable.for_config(cfg))
        self.mempool = Mempool(cfg.mempool_requests, cfg.mempool_bytes, cfg.mempool_per_client)
        self.in_log: dict[RequestId, int] = {}
        """Requests in entries above the ledger, and the index of their entry."""
        self.acks: dict[int, bytes] = {}
        """Acknowledgement bitmaps of committed entries held in memory."""
        for entry in durable.entries_above(ledger.height):
            if (
                entry.index != self.log.last_index + 1
                or entry.header.prev_hash != self.log.last_hash
            ):
                # Entries that do not extend the ledger belong to a branch that lost to a block
                # this replica fetched (they can never commit), or lie above fetched blocks that
                # were not yet durable at the crash (they were never acknowledged: a Ready's
                # messages go out only after its blocks are durable).
                break
            if entry.term > self.term:
                raise SafetyViolation(f"persisted entry {entry.index} is from a future term")
            self.add_entry(LogEntry.of(entry), persist=False)
        self.wal_records = len(context.persisted)
        self.wal_bytes = sum(
            sum(map(len, r.txs)) for r in context.persisted if isinstance(r, Entry)
        )

        self.role = FOLLOWER
        self.leader: int | None = None
        self.elapsed = 0
        self.heartbeat_elapsed = 0
        self.timeout = self.random_timeout()
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self.transfer: Transfer | None = None
        self.fetching: tuple[int, int] | None = None  # (peer, deadline)

        self.elections = 0
        self.pre_votes = 0
        self.terms_led = 0
        self.transfers = 0
        self.transfers_aborted = 0
        self.duplicates = 0
        self.blocks_fetched = 0

    # ================================================================ small rules by name

    def random_timeout(self) -> int:
        return self.cfg.election_ticks + self.rng.randrange(self.cfg.election_ticks)

    def reset_timer(self) -> None:
        self.elapsed = 0
        self.timeout = self.random_timeout()

    def in_lease(self) -> bool:
        """Heard from a live leader within the shortest election timeout (check-quorum)."""
        return (
            self.cfg.check_quorum
            and self.leader is not None
            and self.elapsed < self.cfg.election_ticks
        )

    def log_up_to_date(self, last_term: int, last_index: int) -> bool:
        """5.4.1: the candidate's log ends in a later term, or in the same term and no shorter.

        Also, never a candidate that lacks a block this replica committed: implied by the rule
        within one deployment, and a guard for a chain that switched mode, whose earlier blocks
        carry no Raft terms.
        """
        mine = (self.log.last_term, self.log.last_index)
        return (last_term, last_index) >= mine and last_index >= self.applied

    def safe_to_vote(self, candidate: int) -> bool:
        """One vote per term: for the candidate already voted for, or for nobody while no leader
        of this term is known."""
        return self.voted_for == candidate or (self.voted_for is None and self.leader is None)

    def persist(self, record: Record) -> None:
        super().persist(record)
        self.wal_records += 1

    def sends_before_persist(self) -> bool:
        """A leader's ``Ready`` whose records are only entries it appended: its messages may
        leave while they are written (see the module's docstring). A term or vote to persist
        keeps the usual order, and so does a rewritten log, which starts with the term."""
        return self.role == LEADER and all(type(record) is Entry for record in self._persist)

    def persist_term(self) -> None:
        self.persist(TermRecord(term=self.term, voted_for=self.voted_for))

    # ================================================================ inputs

    def tick(self) -> None:
        self.now += 1
        if self.role == LEADER:
            self.tick_heartbeat()
        else:
            self.tick_election()
        self.maybe_compact_wal()

    def propose(self, request: Request, *, alone: bool = False) -> str:
        if self.answer_if_known(request, self.clients, self.applied):
            return ""
        if request.id in self.mempool:
            return ""
        dropped = self.mempool.add(request, self.now)
        if dropped:
            return dropped  # full: the client retries
        if self.role == LEADER:
            self.maybe_append()
        elif alone:
            self.relay((request.raw,))
        return ""

    def relay_target(self) -> int | None:
        return self.leader if self.role == FOLLOWER else None

    def transactions_to_verify(self, sender: int, message: Record) -> Sequence[bytes]:
        if isinstance(message, Relay) and self.role == LEADER:
            return message.txs
        return ()

    def on_relay(self, sender: int, relay: Relay) -> None:
        """Requests a follower relays. Only the leader appends them; one that arrives at a
        replica that no longer leads (or does not yet) is dropped: the follower relays what it
        still holds to the leader it learns of next."""
        if self.role != LEADER:
            return
        self.take_relay(sender, relay, self.cfg)

    def step(self, sender: int, message: Record) -> None:
        if not 0 <= sender < self.n or sender == self.replica:
            self.reject(sender, message, "sender is not another committee member")
            return
        if isinstance(message, BlockResponse):
            self.on_block_response(sender, message)
            return
        if isinstance(message, Relay):  # not of a term: whoever leads when it arrives takes it
            self.on_relay(sender, message)
            return
        handler = self._handlers.get(type(message))
        if handler is None:
            self.reject(sender, message, f"unexpected message {type(message).__name__}")
            return
        term: int = message.term  # type: ignore[attr-defined]
        if term > self.term:
            if isinstance(message, RequestVote):
                if not message.transfer and self.in_lease():
                    self.reject(sender, message, "vote request while the leader lease holds")
                    return
                if not message.pre:
                    self.become_follower(term, None)
            elif isinstance(message, VoteReply) and message.pre and message.granted:
                pass  # granted pre-votes carry the term we would move to
            else:
                leader = (
                    sender if isinstance(message, AppendEntries | Heartbeat | CatchUp) else None
                )
                self.become_follower(term, leader)
        elif term < self.term:
            self.on_stale(sender, message)
            return
        handler(self, sender, message)

    def advance(self, ready: Ready) -> None:
        super().advance(ready)
        if ready.committed:
            self.durable_height = ready.committed[-1].height
            self.compact()  # what was held back until the ledger had it durably

    def on_stale(self, sender: int, message: Record) -> None:
        """A message from an older term. A leader of an older term is told ours, so that it
        steps down (with check-quorum and pre-vote, a replica whose term moved on while it was
        cut off could otherwise never rejoin); a pre-candidate learns that it is behind."""
        if isinstance(message, AppendEntries | Heartbeat | CatchUp):
            self.send(
                sender,
                AppendReply(
                    term=self.term,
                    success=False,
                    index=0,
                    hint_index=0,
                    hint_term=0,
                    applied=self.applied,
                ),
            )
        elif isinstance(message, RequestVote) and message.pre:
            self.send(sender, VoteReply(term=self.term, granted=False, pre=True))

    # ================================================================ roles (5.2)

    def become_follower(self, term: int, leader: int | None) -> None:
        if term < self.term:
            raise LocalMisuse(f"cannot follow term {term} from term {self.term}")
        if term > self.term:
            self.term = term
            self.voted_for = None
            self.persist_term()
        self.role = FOLLOWER
        known, self.leader = self.leader, leader
        self.reset_timer()
        self.votes = {}
        self.progress = {}
        self.transfer = None
        if leader is not None and leader != known:
            self.relay_pending(self.mempool)  # the new leader may never have been given them

    def follow(self, sender: int) -> None:
        """A message from the leader of our term: follow it and restart the election timer."""
        if self.role == LEADER:
            raise SafetyViolation(f"two leaders in term {self.term}: {self.replica} and {sender}")
        if self.role != FOLLOWER or self.leader != sender:
            self.become_follower(self.term, sender)
        self.elapsed = 0

    def campaign(self, *, transfer: bool = False) -> None:
        """Stand for election: by pre-vote first, unless the leader handed over."""
        if self.role == LEADER:
            return
        if self.cfg.pre_vote and not transfer:
            self.become_pre_candidate()
        else:
            self.become_candidate(transfer=transfer)

    def become_pre_candidate(self) -> None:
        self.role = PRE_CANDIDATE
        self.leader = None
        self.votes = {self.replica: True}
        self.reset_timer()
        self.pre_votes += 1
        if self.majority <= 1:
            self.become_candidate()
            return
        self.broadcast(
            RequestVote(
                term=self.term + 1,
                last_index=self.log.last_index,
                last_term=self.log.last_term,
                pre=True,
                transfer=False,
            )
        )

    def become_candidate(self, *, transfer: bool = False) -> None:
        self.term += 1
        self.voted_for = self.replica
        self.persist_term()
        self.role = CANDIDATE
        self.leader = None
        self.votes = {self.replica: True}
        self.reset_timer()
        self.progress = {}
        self.transfer = None
        self.elections += 1
        if self.majority <= 1:
            self.become_leader()
            return
        self.broadcast(
            RequestVote(
                term=self.term,
                last_index=self.log.last_index,
                last_term=self.log.last_term,
                pre=False,
                transfer=transfer,
            )
        )

    def become_leader(self) -> None:
        self.role = LEADER
        self.leader = self.replica
        self.elapsed = 0
        self.heartbeat_elapsed = 0
        self.terms_led += 1
        self.votes = {}
        self.transfer = None
        nxt = self.log.last_index + 1
        self.progress = {r: Progress(next=nxt, last_progress=self.now) for r in self.peers}
        # What an earlier term of ours took from the pool and did not get committed waits
        # again; requests already in the log are skipped when cutting batches.
        self.mempool.release(self.now)
        self.maybe_append(noop=self.log.last_index > self.applied)
        for r in self.peers:
            self.fill(r)

    # ================================================================ elections (5.2, 5.4.1)

    def tick_election(self) -> None:
        self.elapsed += 1
        if self.fetching is not None and self.now >= self.fetching[1]:
            self.fetching = None
        if self.elapsed >= self.timeout:
            self.campaign()

    def on_request_vote(self, sender: int, m: RequestVote) -> None:
        up_to_date = self.log_up_to_date(m.last_term, m.last_index)
        if m.pre:
            grant = up_to_date and (m.term > self.term or self.safe_to_vote(sender))
            self.send(
                sender,
                VoteReply(term=m.term if grant else self.term, granted=grant, pre=True),
            )
            return
        grant = self.role != LEADER and up_to_date and self.safe_to_vote(sender)
        if grant and self.voted_for != sender:
            self.voted_for = sender
            self.persist_term()  # durable before the vote is sent (same Ready, persisted first)
        if grant:
            self.elapsed = 0
        self.send(sender, VoteReply(term=self.term, granted=grant, pre=False))

    def on_vote_reply(self, sender: int, m: VoteReply) -> None:
        if m.pre:
            if self.role != PRE_CANDIDATE or m.term not in (self.term, self.term + 1):
                return
            if m.granted and m.term != self.term + 1:
                return
        elif self.role != CANDIDATE or m.term != self.term:
            return
        self.votes.setdefault(sender, m.granted)
        granted = sum(self.votes.values())
        rejected = len(self.votes) - granted
        if granted >= self.majority:
            if m.pre:
                self.become_candidate()
            else:
                self.become_leader()
        elif rejected > self.n - self.majority:
            self.become_follower(self.term, None)

    def on_timeout_now(self, sender: int, m: TimeoutNow) -> None:
        """The leader hands over to us (it caught us up first): stand for election now."""
        if self.role == LEADER:
            return
        self.campaign(transfer=True)

    # ================================================ leader: heartbeats, check-quorum

    def tick_heartbeat(self) -> None:
        self.elapsed += 1
        self.heartbeat_elapsed += 1
        if self.elapsed >= self.cfg.election_ticks:
            self.elapsed = 0
            if self.cfg.check_quorum and not self.quorum_active():
                self.become_follower(self.term, None)
                return
            for pr in self.progress.values():
                pr.active = False
        if self.transfer is not None and self.now >= self.transfer.deadline:
            self.transfer = None
            self.transfers_aborted += 1
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            for r in self.peers:
                self.retransmit(r)
                self.send_heartbeat(r)
        self.maybe_append()

    def quorum_active(self) -> bool:
        return 1 + sum(pr.active for pr in self.progress.values()) >= self.majority

    def retransmit(self, r: int) -> None:
        """Resend what a follower lacks when its replies stopped coming (lost messages)."""
        pr = self.progress[r]
        if pr.state == FETCH:
            if pr.fetch_sent is None or self.now - pr.fetch_sent >= self.cfg.fetch_timeout:
                self.send_catch_up(r)
            return
        if self.lacks_compacted(pr):
            self.enter_fetch(r)
            return
        if pr.match >= self.log.last_index:
            return
        if pr.state == REPLICATE and self.now - pr.last_progress >= self.cfg.stall_ticks:
            self.become_probe(pr)
        if pr.state == PROBE:
            pr.paused = False
            self.fill(r)

    def send_heartbeat(self, r: int) -> None:
        pr = self.progress[r]
        commit = min(pr.match, self.commit)
        acks_from, acks = self.acks_for(pr, commit)
        self.send(r, Heartbeat(term=self.term, commit=commit, acks_from=acks_from, acks=acks))

    def on_heartbeat(self, sender: int, m: Heartbeat) -> None:
        self.follow(sender)
        limit = min(m.commit, self.log.last_index)
        self.learn_commit(limit, m.acks_from, m.acks)
        self.send(sender, HeartbeatReply(term=self.term, applied=self.applied))

    def on_heartbeat_reply(self, sender: int, m: HeartbeatReply) -> None:
        if self.role != LEADER:
            return
        pr = self.progress[sender]
        pr.active = True
        self.note_applied(pr, m.applied)
        if pr.match < self.log.last_index and pr.state == PROBE:
            pr.paused = False
            self.fill(sender)
        self.maybe_send_timeout_now(sender)

    # ================================================================ leader: replication (5.3)

    def maybe_append(self, *, noop: bool = False) -> None:
        """Cut entries from waiting requests while the pipeline has room."""
        if self.role != LEADER or self.transfer is not None:
            return
        cfg = self.cfg
        appended = False
        while self.log.last_index - self.commit < cfg.max_uncommitted:
            pool = self.mempool
            in_flight = self.log.last_index - self.commit
            if not cfg.batch.due(
                pool.waiting, pool.waiting_bytes, pool.oldest_tick(), self.now, in_flight
            ):
                break
            fresh = self.fresh_requests(self.mempool.take(cfg.batch.max_txs, cfg.batch.max_bytes))
            if fresh:
                self.append_new(fresh)
                appended = True
        if noop and not appended:
            self.append_new([])
            appended = True
        if appended:
            self.maybe_commit()
            for r in self.peers:
                self.fill(r)

    def fresh_requests(self, requests: Sequence[Request]) -> list[Request]:
        """The requests that may go into a new entry: not committed, not in the log, once.

        This is the one place where an entry's content is fixed, so the one place to filter.
        """
        out: list[Request] = []
        seen: set[RequestId] = set()
        settled: list[RequestId] = []
        for request in requests:
            rid = request.id
            if rid in seen or rid in self.in_log:
                continue  # stays held until its entry is applied
            if not self.clients.is_new(request.client, request.seq):
                settled.append(rid)
                continue
            seen.add(rid)
            out.append(request)
        self.mempool.remove(settled)
        return out

    def append_new(self, requests: Sequence[Request]) -> None:
        """Append an entry of our term: the header of its block is built now (hash chain)."""
        txs = tuple(r.raw for r in requests)
        header = make_header(
            chain_id=self.chain_id,
            height=self.log.last_index + 1,
            prev_hash=self.log.last_hash,
            txs=txs,
            protocol=self.protocol,
            view=self.term,
            proposer=self.replica,
        )
        self.add_entry(LogEntry(Entry(header=header, txs=txs), header.hash(), tuple(requests)))

    def add_entry(self, entry: LogEntry, *, persist: bool = True) -> None:
        self.log.append(entry)
        if persist:
            self.persist(entry.entry)  # durable before anyone is told we hold it
            self.wal_bytes += entry.size
        for request in entry.requests:
            self.in_log[request.id] = entry.index

    def drop(self, removed: Sequence[LogEntry]) -> None:
        """Forget what removed entries held."""
        for entry in removed:
            self.acks.pop(entry.index, None)
            for request in entry.requests:
                if self.in_log.get(request.id) == entry.index:
                    del self.in_log[request.id]

    def fill(self, r: int) -> None:
        """Send follower ``r`` what it lacks, as far as its state and window allow."""
        while self.send_append(r):
            pass

    def send_append(self, r: int) -> bool:
        """Send one AppendEntries to ``r`` if its progress allows; True if more may follow."""
        pr = self.progress[r]
        if pr.state == FETCH or (pr.state == PROBE and pr.paused):
            return False
        if pr.state == REPLICATE and len(pr.inflight) >= self.cfg.max_inflight:
            return False
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None or self.lacks_compacted(pr):
            self.enter_fetch(r)
            return False
        entries = self.log.slice(
            pr.next, self.cfg.max_entries_per_message, self.cfg.max_message_bytes
        )
        if pr.state == REPLICATE and not entries:
            return False
        last = prev + len(entries)
        acks_from, acks = self.acks_for(pr, min(last, self.commit))
        self.send(
            r,
            AppendEntries(
                term=self.term,
                prev_index=prev,
                prev_term=prev_term,
                entries=tuple(e.entry for e in entries),
                commit=self.commit,
                acks_from=acks_from,
                acks=acks,
            ),
        )
        if pr.state == PROBE:
            pr.paused = True
            return False
        if not pr.inflight:
            pr.last_progress = self.now  # the stall clock starts with the first message out
        pr.next = last + 1
        pr.inflight.append(last)
        return True

    def acks_for(self, pr: Progress, upto: int) -> tuple[int, tuple[bytes, ...]]:
        """The bitmaps of committed entries the follower has not applied, up to ``upto``."""
        start = max((pr.applied or 0) + 1, self.log.base_index + 1)
        stop = min(upto, start + MAX_ACKS_PER_MESSAGE - 1)
        out = []
        for index in range(start, stop + 1):
            bitmap = self.acks.get(index)
            if bitmap is None:
                break
            out.append(bitmap)
        return start, tuple(out)

    def lacks_compacted(self, pr: Progress) -> bool:
        """The follower has not applied entries we compacted: it may hold them, but we no longer
        have their acknowledgement bitmaps; the certified blocks are in our ledger."""
        return pr.applied is not None and pr.applied < self.log.base_index

    def become_probe(self, pr: Progress) -> None:
        pr.state = PROBE
        pr.next = pr.match + 1
        pr.inflight.clear()
        pr.paused = False

    def enter_fetch(self, r: int) -> None:
        pr = self.progress[r]
        pr.state = FETCH
        pr.inflight.clear()
        self.send_catch_up(r)

    def send_catch_up(self, r: int) -> None:
        self.progress[r].fetch_sent = self.now
        self.send(r, CatchUp(term=self.term, height=self.durable_height))

    def note_applied(self, pr: Progress, applied: int) -> None:
        """The follower's ledger height: committed entries, so they match ours."""
        pr.applied = applied if pr.applied is None else max(pr.applied, applied)
        if pr.applied > pr.match:
            pr.match = pr.applied
            pr.last_progress = self.now
            pr.next = max(pr.next, pr.match + 1)
        if pr.state == FETCH and pr.applied >= self.log.base_index:
            self.become_probe(pr)

    def on_append_reply(self, sender: int, m: AppendReply) -> None:
        if self.role != LEADER:
            return
        pr = self.progress[sender]
        pr.active = True
        self.note_applied(pr, m.applied)
        if m.success:
            if m.index > pr.match:
                pr.match = m.index
                pr.last_progress = self.now
            pr.next = max(pr.next, pr.match + 1)
            while pr.inflight and pr.inflight[0] <= pr.match:
                pr.inflight.popleft()
            if pr.state == PROBE:
                pr.state = REPLICATE
                pr.next = pr.match + 1
                pr.inflight.clear()
                pr.paused = False
            self.maybe_commit()
            self.maybe_send_timeout_now(sender)
            if self.role == LEADER:
                self.fill(sender)
            return
        if m.index <= pr.match or pr.state == FETCH:
            return  # a stale rejection
        self.become_probe(pr)
        pr.next = self.next_after_rejection(pr, m)
        self.fill(sender)

    def next_after_rejection(self, pr: Progress, m: AppendReply) -> int:
        """Fast backtracking: skip the follower's whole conflicting term in one round trip.

        If we hold entries of the follower's conflicting term, retry after our last one of
        them; if not, from the first index the follower holds of that term (or its end).
        """
        nxt = m.hint_index
        if m.hint_term:
            last = self.log.last_index_of_term(m.hint_term, m.index - 1)
            if last is not None:
                nxt = last + 1
        return max(pr.match + 1, min(nxt, m.index))

    def maybe_commit(self) -> None:
        """5.4.2: commit the highest index a majority stores, if its entry is of our term."""
        if self.role != LEADER:
            return
        matches = sorted([self.log.last_index] + [pr.match for pr in self.progress.values()])
        index = matches[len(matches) - self.majority]
        if index <= self.commit or self.log.term_at(index) != self.term:
            return
        for i in range(self.applied + 1, index + 1):
            if i not in self.acks:
                stored = [self.replica] + [r for r, pr in self.progress.items() if pr.match >= i]
                self.acks[i] = make_bitmap(sorted(stored), self.n)
        self.commit = index
        self.apply_committed()
        self.maybe_append()

    # ================================================================ follower: replication (5.3)

    def on_append_entries(self, sender: int, m: AppendEntries) -> None:
        self.follow(sender)
        prev = m.prev_index
        log = self.log
        if prev > log.last_index:
            self.send_append_reply(sender, False, prev, log.last_index + 1, 0)
            return
        entries = m.entries
        # Entries at or below our commit index are committed, hence identical to the leader's.
        skip = min(max(0, self.commit - prev), len(entries))
        anchor = prev + skip
        if anchor < self.commit:
            self.learn_commit(min(m.commit, self.commit), m.acks_from, m.acks)
            self.send_append_reply(sender, True, self.commit, 0, 0)
            return
        if skip == 0 and log.term_at(prev) != m.prev_term:
            conflict = log.term_at(prev) or 0
            hint = log.first_index_of_term(conflict, prev, floor=self.commit)
            self.send_append_reply(sender, False, prev, hint, conflict)
            return
        new = entries[skip:]
        reason, start = self.check_entries(m, anchor, new)
        if reason:
            self.reject(sender, m, reason)
            return
        if start is not None:
            prepared = self.prepare_entries(new[start - anchor - 1 :])
            if prepared is None:
                self.reject(sender, m, "entry holds a malformed transaction or a wrong root")
                return
            if start <= self.commit:
                raise SafetyViolation(f"replica {self.replica} asked to overwrite entry {start}")
            self.drop(log.truncate_from(start))
            for entry in prepared:
                self.add_entry(entry)  # persisted: durable before the reply below is sent
        verified = prev + len(entries)
        self.learn_commit(min(m.commit, verified), m.acks_from, m.acks)
        self.send_append_reply(sender, True, verified, 0, 0)

    def check_entries(
        self, m: AppendEntries, anchor: int, entries: Sequence[Entry]
    ) -> tuple[str, int | None]:
        """Check that ``entries`` extend our log at ``anchor`` as a hash chain of increasing
        terms; return ``(reason, first index that is not already in our log)``."""
        prev_hash = self.log.hash_at(anchor)
        prev_term = self.log.term_at(anchor) or 0
        start: int | None = None
        for k, entry in enumerate(entries):
            header = entry.header
            index = anchor + 1 + k
            if header.height != index:
                return "entries are not contiguous", None
            if header.chain_id != self.chain_id:
                return "entry of another chain", None
            if header.prev_hash != prev_hash:
                return "entry does not link to its predecessor", None
            if not prev_term <= header.view <= m.term:
                return "entry terms out of order", None
            if header.proposer >= self.n:
                return "entry proposer is not a committee member", None
            block_hash = header.hash()
            if start is None:
                mine = self.log.get(index)
                if mine is None:
                    start = index
                elif mine.hash != block_hash:
                    if mine.term == header.view:
                        return "two different entries of one term at one index", None
                    start = index
            prev_hash, prev_term = block_hash, header.view
        return "", start

    def prepare_entries(self, entries: Sequence[Entry]) -> list[LogEntry] | None:
        out = []
        for entry in entries:
            txs = entry.txs
            root = merkle_root(txs) if txs else EMPTY_ROOT
            if root != entry.header.tx_root:
                return None
            try:
                requests = [Request.from_raw(raw) for raw in txs]
            except CodecError:
                return None
            if any(len(raw) > self.cfg.max_tx_bytes for raw in txs):
                return None
            out.append(LogEntry.of(entry, requests))
        return out

    def send_append_reply(
        self, to: int, success: bool, index: int, hint_index: int, hint_term: int
    ) -> None:
        self.send(
            to,
            AppendReply(
                term=self.term,
                success=success,
                index=index,
                hint_index=hint_index,
                hint_term=hint_term,
                applied=self.applied,
            ),
        )

    def learn_commit(self, commit: int, acks_from: int, acks: Sequence[bytes]) -> None:
        """The leader's commit index (as far as our log is known to match its) and the
        acknowledgement bitmaps of committed entries; apply what we can."""
        if commit > self.commit:
            self.commit = commit
        for k, bitmap in enumerate(acks):
            index = acks_from + k
            if index > commit:
                break
            if index > self.applied and index > self.log.base_index:
                self.acks.setdefault(index, bitmap)
        self.apply_committed()

    # ================================================================ applying: the ledger

    def apply_committed(self) -> None:
        """Turn committed entries into ledger blocks, in height order."""
        while self.applied < self.commit:
            index = self.applied + 1
            entry = self.log.get(index)
            bitmap = self.acks.get(index)
            if entry is None or bitmap is None:
                break
            header = entry.entry.header
            try:
                certificate = QuorumCertificate(
                    statement=header.commit_statement(entry.hash), signers=bitmap, signatures=()
                )
                verify_certificate(header, certificate, self.committee, entry.hash)
            except (CodecError, BlockError) as exc:
                del self.acks[index]
                self.reject(
                    self.leader if self.leader is not None else -1,
                    bitmap,
                    f"acknowledgement set of entry {index}: {exc}",
                )
                break
            self.emit_committed(Block(header=header, txs=entry.entry.txs, certificate=certificate))
            self.applied, self.applied_hash = index, entry.hash
            self.record_applied(index, entry.requests)
            entry.requests = ()  # applied: only the encoded entry is needed from here on
        self.compact()

    def record_applied(self, height: int, requests: Sequence[Request]) -> None:
        ids = []
        for position, request in enumerate(requests):
            rid = request.id
            ids.append(rid)
            if self.in_log.get(rid) == height:
                del self.in_log[rid]
            if (
                not self.clients.is_new(request.client, request.seq)
                and self.clients.status(request.client, request.seq)[0] is Status.COMMITTED
            ):
                self.duplicates += 1  # a broken dedup rule; the invariant checkers catch it
                continue
            self.clients.record(request, height, position)
            self.reply(Reply(request.client, request.seq, height, position))
        self.mempool.remove(ids)

    def compact(self) -> None:
        """Forget entries that are in the durable ledger and old enough."""
        limit = min(self.applied, self.durable_height)
        upto = min(self.applied - self.cfg.log_retain, limit)
        upto = max(upto, self.log.retained_upto(limit, self.cfg.log_retain_bytes))
        base = self.log.base_index
        if upto <= base:
            return
        self.log.compact_to(upto)
        for index in range(base + 1, upto + 1):
            self.acks.pop(index, None)

    def maybe_compact_wal(self) -> None:
        """Replace the protocol log by the state it holds, once it has grown long."""
        cfg = self.cfg
        if self.wal_records < cfg.wal_compact_records and self.wal_bytes < cfg.wal_compact_bytes:
            return
        if self.log.base_index > self.durable_height:
            return  # fetched blocks not yet durable: the protocol log still holds what they replace
        kept = [e for e in self.log.entries if e.index > self.durable_height]
        kept_bytes = sum(e.size for e in kept)
        if (len(kept) + 1) * 2 > cfg.wal_compact_records or kept_bytes * 2 > cfg.wal_compact_bytes:
            return  # mostly entries not yet in the ledger: a snapshot would not shrink it
        records: list[Record] = [TermRecord(term=self.term, voted_for=self.voted_for)]
        records += [e.entry for e in kept]
        self.persist_snapshot(records)
        self.wal_records, self.wal_bytes = len(records), kept_bytes

    # ================================================================ catching up from the ledger

    def on_catch_up(self, sender: int, m: CatchUp) -> None:
        self.follow(sender)
        if m.height > self.applied:
            self.start_fetch(sender)

    def start_fetch(self, peer: int) -> None:
        if self.fetching is not None and self.now < self.fetching[1]:
            return
        self.fetching = (peer, self.now + self.cfg.fetch_timeout)
        self.send(peer, BlockRequest(start=self.applied + 1, count=MAX_BLOCKS_PER_RESPONSE))

    def on_block_response(self, sender: int, m: BlockResponse) -> None:
        blocks = self.fetched_extension(sender, m, self.applied, self.applied_hash)
        for block in blocks:
            if block.height != self.applied + 1:
                continue  # applied meanwhile, as a side effect of the one before
            self.adopt_block(block)
            self.blocks_fetched += 1
        progressed = bool(blocks)
        if self.fetching is not None and self.fetching[0] == sender:
            self.fetching = None
        if progressed:
            if m.height > self.applied:
                self.start_fetch(sender)
            self.apply_committed()

    def adopt_block(self, block: Block) -> None:
        """Append a verified block fetched from a peer's ledger."""
        height = block.height
        block_hash = block.hash()
        mine = self.log.get(height)
        if mine is not None and mine.hash != block_hash:
            if height <= self.commit:
                raise SafetyViolation(
                    f"replica {self.replica} committed a different entry at {height} "
                    "than the ledger it fetched"
                )
            self.drop(self.log.truncate_from(height))
            mine = None
        self.emit_committed(block)
        self.applied, self.applied_hash = height, block_hash
        self.commit = max(self.commit, height)
        if mine is None:
            self.drop(self.log.reset(height, term_of_block(block), block_hash))
            self.record_applied(height, requests_of(block))
        else:
            if not block.certificate.is_signed:
                self.acks.setdefault(height, block.certificate.signers)
            self.record_applied(height, mine.requests)

    # ================================================================ leadership transfer

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to ``target`` (for maintenance): stop taking new entries, catch the
        target up, then tell it to stand for election at once (TimeoutNow). Gives up after an
        election timeout; the leader then carries on."""
        if self.role != LEADER:
            raise NotLeader(self.replica, self.leader)
        if not 0 <= target < self.n:
            raise LocalMisuse(f"replica {target} is outside a committee of {self.n}")
        if target == self.replica:
            return
        self.transfer = Transfer(target, self.now + self.cfg.election_ticks)
        self.transfers += 1
        pr = self.progress[target]
        if pr.match < self.log.last_index and pr.state != FETCH:
            self.become_probe(pr)  # do not wait for a lost message to be noticed
        self.fill(target)
        self.maybe_send_timeout_now(target)

    def maybe_send_timeout_now(self, r: int) -> None:
        transfer = self.transfer
        if transfer is None or transfer.target != r or self.role != LEADER:
            return
        if self.progress[r].match == self.log.last_index:
            self.send(r, TimeoutNow(term=self.term))

    # ================================================================ status

    def status(self) -> CoreStatus:
        return CoreStatus(
            protocol=self.protocol,
            replica=self.replica,
            role=self.role,
            view=self.term,
            leader=self.leader,
            height=self.applied,
            pending=len(self.mempool),
            extra={
                "view_changes": self.elections,
                "pre_votes": self.pre_votes,
                "terms_led": self.terms_led,
                "commit": self.commit,
                "last_index": self.log.last_index,
                "transfers": self.transfers,
                "transfers_aborted": self.transfers_aborted,
                "duplicates": self.duplicates,
                "blocks_fetched": self.blocks_fetched,
                "rejected": self.rejections.total,
                "relayed": self.relayed,
                "relayed_in": self.relayed_in,
            },
        )

    _handlers = {
        AppendEntries: on_append_entries,
        AppendReply: on_append_reply,
        Heartbeat: on_heartbeat,
        HeartbeatReply: on_heartbeat_reply,
        RequestVote: on_request_vote,
        VoteReply: on_vote_reply,
        TimeoutNow: on_timeout_now,
        CatchUp: on_catch_up,
    }

"""PBFT, after Castro & Liskov, "Practical Byzantine Fault Tolerance" (OSDI'99) and
"Practical Byzantine Fault Tolerance and Proactive Recovery" (TOCS'02). Section numbers below
refer to the TOCS paper.

Theory of operation
-------------------
Normal case (4.2). The primary of view ``v`` (``leader(v)``) assigns a :class:`Proposal` to the
next sequence number ``n`` within the watermarks and broadcasts a signed PRE-PREPARE. A backup
accepts it if it is in view ``v``, the signature is the primary's, ``n`` is within the watermarks,
it has accepted no other proposal at ``(v, n)``, and the proposal is valid (well-formed requests,
none committed, stale or already in flight, client signatures good); it then broadcasts a signed
PREPARE. A replica is *prepared* at ``(v, n, d)`` with the pre-prepare and 2f matching prepares
from distinct backups; it then broadcasts a signed COMMIT, and is *committed-local* with a
Byzantine quorum (2f+1) of matching commits. Several sequence numbers are in flight at once
(pipelining), each carrying a batch of requests.

Execution and checkpoints (4.3). Committed proposals execute in sequence order: executing ``n``
builds ledger block ``n`` (its previous hash is block ``n-1``'s; its view and proposer are the
proposal's, so every replica builds the same block whichever view it committed in). The replica
signs the block's ledger commit statement and broadcasts it in a CHECKPOINT message. A Byzantine
quorum of matching CHECKPOINTs is both the block's certificate, which makes it a ledger block, and
a checkpoint certificate; every ``K`` blocks the checkpoint becomes *stable*, the log below it is
garbage-collected, and the watermarks move to ``(s, s + L]``.

A replica prepared at the next height signs that block's checkpoint at once and sends it in place
of its commit (section 5.1's tentative execution, for the certificate only; the block executes
once committed). Such a checkpoint counts as its signer's commit; the commit itself is kept and
sent only should the slot stall, or where no early checkpoint stands for it (a slot prepared
ahead of the one below, a proposal carried into a later view). A vote that can prove nothing new
(a prepare once the slot is prepared, a commit once it is committed or once its sender's
checkpoint counted) is dropped without checking its signature, unless its sender was seen voting
for another digest: in the normal case a replica checks four signatures per block, not eight.

Requests (4.1). A client sends a request to the primary it knows. A backup that admits a request
its client sent to it alone (a client that has not yet heard of a view change) relays it to the
primary of its view (:class:`~bft.core.messages.Relay`), and a backup that installs a new view
relays the requests it holds to the new primary: they reach the primary that can order them
without the client's timeout, and a backup's request timer runs only for requests its primary
was given. The primary admits relayed requests as it admits its clients' (size, form,
signatures); the relaying replica answers the client when the request commits.

View changes (4.4). A backup whose oldest pending request waited ``request_timeout`` ticks, or
that sees f+1 replicas ask for a higher view, moves to view ``v+1``: it broadcasts a signed
VIEW-CHANGE with its last certified block and a prepared certificate for every request it
prepared above it. The primary of ``v+1`` collects 2f+1 valid ones and broadcasts NEW-VIEW: those
view changes and, for each sequence number between the highest checkpoint and the highest
prepared request among them, a pre-prepare for the request prepared in the highest view, or a
null request. Every replica checks NEW-VIEW by recomputing that set before it acts on it. A
replica that waited ``view_change_timeout`` (doubling each time) for NEW-VIEW moves on to the next
view; the wait starts once 2f+1 replicas ask for the view (4.5.2), so a replica that asked alone
stays where the others can join it rather than moving up ahead of them for good. A replica that
learns of a later view from f+1 replicas asks to join it, and any replica in that view answers a
VIEW-CHANGE for it with the NEW-VIEW it installed.

State transfer (4.5, with ledger blocks as the state). A replica that sees f+1 replicas
checkpoint heights it has not reached, or whose NEW-VIEW starts above its ledger, fetches the
certified blocks from a peer and appends each one only after verifying its hash link and its
certificate.

Durability (see :mod:`bft.pbft.state`): the view, every vote, and every prepared certificate are
persisted before the message that depends on them is sent; a restarted replica will not sign a
vote that conflicts with one it cast before the crash.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from bft.core.admission import UNSIGNED_UNDER_A_KEY, unsigned_under_a_key
from bft.core.base import MAX_RELAY_PENDING, CoreBase
from bft.core.errors import LocalMisuse, SafetyViolation
from bft.core.interface import CoreContext, CoreStatus
from bft.core.messages import BlockRequest, BlockResponse, Relay
from bft.core.quorum import VoteTally
from bft.core.ready import Reply
from bft.core.requests import ClientTable, Mempool, Request, RequestId, requests_of
from crypto import InvalidCertificate, QuorumCertificate
from crypto.codec import CodecError, Record, encode_value
from ledger import (
    Block,
    BlockError,
    BlockHeader,
    Transaction,
    commit_domain,
    make_header,
    txid_of,
    verify_certificate,
)

from .config import PbftConfig
from .messages import (
    Checkpoint,
    CheckpointProof,
    Commit,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    Proposal,
    Statements,
    ViewChange,
)
from .state import Durable, ViewRecord, VoteRecord

FETCH_BATCH = 32


@dataclass(slots=True)
class Slot:
    """What a replica holds for one sequence number in the current view."""

    preprepare: PrePrepare
    proposal: Proposal
    digest: bytes
    requests: list[Request]
    accepted_at: int
    prepared: bool = False
    committed: bool = False


@dataclass(slots=True)
class Executed:
    """A block executed locally and waiting for its certificate (2f+1 checkpoints)."""

    header: BlockHeader
    txs: tuple[bytes, ...]
    requests: list[Request]
    block_hash: bytes
    statement: bytes


class PbftCore(CoreBase):
    protocol = "pbft"

    def __init__(self, context: CoreContext) -> None:
        super().__init__(context)
        cfg = context.config if context.config is not None else PbftConfig()
        if not isinstance(cfg, PbftConfig):
            raise LocalMisuse(f"PBFT needs a PbftConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.n = self.committee.n
        self.f = self.committee.f
        self.quorum = cfg.unsafe_quorum or self.committee.quorum
        self.st = Statements(self.chain_id)
        self.commit_domain = commit_domain(self.chain_id)
        self.now = 0

        durable = Durable.load(context.persisted)
        self.durable = durable
        self.view = durable.view
        self.in_view_change = False
        self.view_changes_started = 0
        self.backoff = 0
        self.vc_deadline: int | None = None
        """When the view change under way gives up on its NEW-VIEW; ``None`` until 2f+1
        replicas ask for that view (4.5.2)."""
        self.vc_timeout = 0

        ledger = context.ledger
        self.cert_height = self.exec_height = self.stable = ledger.height
        self.cert_hash = self.exec_hash = ledger.last_hash
        self.last_cert: CheckpointProof | None = None
        if ledger.recent:
            last = ledger.recent[-1]
            self.last_cert = CheckpointProof(header=last.header, certificate=last.certificate)

        self.clients = self.start_client_table(ledger, ClientTable.for_config(cfg))
        self.mempool = Mempool(cfg.mempool_requests, cfg.mempool_bytes, cfg.mempool_per_client)

        self.slots: dict[int, Slot] = {}
        self.in_flight: dict[RequestId, int] = {}
        self.prepares: VoteTally[tuple[int, int, bytes], bytes] = VoteTally()
        self.commits: VoteTally[tuple[int, int, bytes], bytes] = VoteTally()
        self.executed: dict[int, Executed] = {}
        # The block signed early for the next height: its proposal, the hash it extends, the
        # block, and the view its checkpoint was sent in.
        self.early_block: tuple[Proposal, bytes, Executed, int] | None = None
        self.early_checkpoints = 0
        self.late_votes = 0  # votes dropped unverified: what they prove was proven (late_vote)
        self.checkpoints: dict[int, dict[tuple[int, bytes], dict[int, bytes]]] = {}
        self.claims: dict[int, int] = {}  # replica -> height it claims its ledger reaches
        self.checkpoint_heights: dict[int, int] = {}  # replica -> its highest checkpoint seen
        self.latest_vc: dict[int, ViewChange] = {}
        self.seen_views: dict[int, int] = {}
        self.new_view_resent: dict[int, int] = {}  # replica -> tick the NEW-VIEW was resent
        self.last_new_view: NewView | None = None
        self.next_seq = (
            max(
                [self.exec_height]
                + [
                    seq
                    for (kind, v, seq) in durable.votes
                    if kind == "pre-prepare" and v == self.view
                ]
            )
            + 1
        )
        self.fetching: tuple[int, int] | None = None  # (peer, deadline)
        # Our checkpoint for the ledger's last block: re-sent (retransmit), it tells the others
        # how far our ledger reaches.
        self.last_checkpoint: Checkpoint | None = None
        if ledger.recent:
            # Restarted: the reach is announced from the start. A replica that crashed before
            # its checkpoint for its last block left would otherwise never be heard claiming
            # it, and peers short of that block may wait for that claim (f+1) for good.
            last = ledger.recent[-1]
            self.last_checkpoint = Checkpoint(
                height=last.height,
                view=last.header.view,
                block_hash=ledger.last_hash,
                signature=self.signer.sign_digest(last.header.commit_statement(ledger.last_hash)),
            )
        self.last_progress = 0
        self.last_certified = 0
        self.propose_due = False
        self.came_alone: list[bytes] = []
        """Requests admitted since the last ``ready`` that their client sent here alone."""
        self.relayed_upto = -1  # requests that arrived by this tick were relayed once they aged
        self.evidence: deque[tuple[Record, Record]] = deque(maxlen=cfg.evidence_kept)
        self.evidence_total = 0
        # (kind, view, seq, sender) -> the digest its first vote named: a second vote for
        # another digest is equivocation. Collected with the slots (stable checkpoints, views).
        self.vote_digests: dict[tuple[str, int, int, int], bytes] = {}
        if self.view > 0:
            # Restarted in a view whose NEW-VIEW we may not have: ask to join it again; any
            # replica already in it answers with that NEW-VIEW.
            self.start_view_change(self.view, resume=True)

    # ================================================================ small rules by name

    def leader(self, view: int) -> int:
        return self.cfg.leaders.get(view, view % self.n)

    @property
    def is_primary(self) -> bool:
        return not self.in_view_change and self.leader(self.view) == self.replica

    @property
    def low(self) -> int:
        return self.stable

    @property
    def high(self) -> int:
        return self.stable + self.cfg.window

    def in_watermarks(self, seq: int) -> bool:
        return self.low < seq <= self.high

    def sig_ok(self, replica: int, digest: bytes, signature: bytes) -> bool:
        return self.committee.verify_signature(replica, digest, signature)

    def safe_to_sign(self, kind: str, view: int, seq: int, digest: bytes) -> bool:
        """Never sign two different digests for one (kind, view, seq), even across a restart."""
        known = self.durable.votes.get((kind, view, seq))
        return known is None or known == digest

    def sign_vote(self, kind: str, view: int, seq: int, digest: bytes, statement: bytes) -> bytes:
        if not self.safe_to_sign(kind, view, seq, digest):
            raise SafetyViolation(f"replica {self.replica} asked to sign a conflicting {kind}")
        if (kind, view, seq) not in self.durable.votes:
            self.durable.votes[(kind, view, seq)] = digest
            self.persist(VoteRecord(kind=kind, view=view, seq=seq, digest=digest))
        return self.signer.sign_digest(statement)

    # ================================================================ inputs

    def tick(self) -> None:
        self.now += 1
        if self.in_view_change:
            if self.vc_deadline is not None and self.now >= self.vc_deadline:
                self.start_view_change(self.view + 1)
        elif not self.is_primary:
            if self.request_timer_expired():
                self.start_view_change(self.view + 1)
            elif self.now % self.cfg.retransmit_interval == 0:
                self.relay_aged()
        if self.is_primary:
            self.maybe_propose()
        if self.now % self.cfg.retransmit_interval == 0:
            self.retransmit()
        self.maybe_fetch()

    def propose(self, request: Request, *, alone: bool = False) -> str:
        if self.answer_if_known(request, self.clients, self.cert_height):
            return ""
        rid = request.id
        if rid in self.mempool:
            return ""
        if request.signed:
            self.verified.add([txid_of(request.raw)])
        dropped = self.mempool.add(request, self.now)
        if dropped:
            return dropped  # full: the client retries
        if rid in self.in_flight:
            # Known so far from the primary's pre-prepare alone: pooled, held, so that a view
            # change that loses that pre-prepare proposes it again.
            self.mempool.hold([rid])
            return ""
        if alone:
            self.came_alone.append(request.raw)  # relayed by before_ready unless primary
        # Batches are cut when the driver next asks for work (before_ready), so requests that
        # arrive together (a client's frame, a busy inbox) share a batch.
        self.propose_due = True
        return ""

    def before_ready(self) -> None:
        if self.came_alone:
            # Checked once per batch of input: a primary takes nearly every request alone.
            if not self.is_primary:
                self.relay(self.came_alone)
            self.came_alone = []
        if self.propose_due:
            self.propose_due = False
            if self.is_primary:
                self.maybe_propose()

    def step(self, sender: int, message: Record) -> None:
        if not 0 <= sender < self.n or sender == self.replica:
            self.reject(sender, message, "sender is not another committee member")
            return
        handler = self._handlers.get(type(message))
        if handler is None:
            self.reject(sender, message, f"unexpected message {type(message).__name__}")
            return
        handler(self, sender, message)

    def transactions_to_verify(self, sender: int, message: Record) -> Sequence[bytes]:
        # Only a proposal this replica may act on: any other replica's would spend its CPU.
        if isinstance(message, PrePrepare) and sender == self.leader(message.view):
            return message.proposal.txs
        if isinstance(message, Relay) and self.is_primary:
            return message.txs
        return ()

    def relay_target(self) -> int | None:
        return None if self.in_view_change else self.leader(self.view)

    def on_relay(self, sender: int, relay: Relay) -> None:
        """Requests a backup relays (4.1). Only the primary orders them; one that arrives
        during a view change or after it is dropped: the relaying backup relays what it still
        holds to the new primary when it installs the new view."""
        if not self.is_primary:
            return
        self.take_relay(sender, relay, self.cfg)

    # ================================================================ normal case (4.2)

    def maybe_propose(self) -> None:
        """The primary cuts batches while it has requests, room in the window and in flight."""
        cfg = self.cfg
        while self.is_primary:
            if (
                self.next_seq > self.high
                or self.next_seq - 1 - self.exec_height >= cfg.max_inflight
            ):
                return
            pool = self.mempool
            in_flight = self.next_seq - 1 - self.exec_height
            if not cfg.batch.due(
                pool.waiting, pool.waiting_bytes, pool.oldest_tick(), self.now, in_flight
            ):
                return
            if ("pre-prepare", self.view, self.next_seq) in self.durable.votes:
                # Restarted after proposing at this sequence in this view; that proposal was
                # lost with the crash and another would equivocate. Hand the view on.
                self.start_view_change(self.view + 1)
                return
            requests = self.mempool.take(cfg.batch.max_txs, cfg.batch.max_bytes)
            seq = self.next_seq
            proposal = Proposal(
                seq=seq, view=self.view, proposer=self.replica, txs=tuple(r.raw for r in requests)
            )
            self.send_preprepare(seq, proposal, requests)

    def send_preprepare(self, seq: int, proposal: Proposal, requests: list[Request]) -> None:
        digest = proposal.digest()
        signature = self.sign_vote(
            "pre-prepare",
            self.view,
            seq,
            digest,
            self.st.pre_prepare_digest(self.view, seq, digest),
        )
        pp = PrePrepare(view=self.view, seq=seq, proposal=proposal, signature=signature)
        slot = self.accept_slot(pp, digest, requests)
        self.next_seq = max(self.next_seq, seq + 1)
        if self.n > 1:
            self.broadcast(pp)
        self.check_prepared(slot)  # a committee of one needs no prepares

    def accept_slot(self, pp: PrePrepare, digest: bytes, requests: list[Request]) -> Slot:
        slot = Slot(pp, pp.proposal, digest, requests, self.now)
        self.slots[pp.seq] = slot
        if pp.seq > self.exec_height:  # a re-proposal of an executed request is only voted on
            ids = [r.id for r in requests]
            for rid in ids:
                self.in_flight[rid] = pp.seq
            self.mempool.hold(ids)
        return slot

    def on_preprepare(self, sender: int, pp: PrePrepare) -> None:
        if pp.view != self.view or self.in_view_change:
            self.note_view(sender, pp.view, pp)
            return
        if sender != self.leader(pp.view):
            self.reject(sender, pp, "pre-prepare from a replica that is not the primary")
            return
        if not self.in_watermarks(pp.seq):
            self.reject(sender, pp, "pre-prepare outside the watermarks")
            return
        proposal = pp.proposal
        digest = proposal.digest()
        if not self.sig_ok(
            sender, self.st.pre_prepare_digest(pp.view, pp.seq, digest), pp.signature
        ):
            self.reject(sender, pp, "bad pre-prepare signature")
            return
        existing = self.slots.get(pp.seq)
        if existing is not None:
            if existing.digest != digest:
                self.record_equivocation(existing.preprepare, pp)
            elif not self.is_primary:
                self.send_prepare(existing)  # a retransmission: our prepare may have been lost
            return
        if proposal.seq != pp.seq or proposal.view != pp.view or proposal.proposer != sender:
            self.reject(sender, pp, "proposal does not belong to this pre-prepare")
            return
        requests = self.valid_requests(sender, pp)
        if requests is None:
            return
        if not self.safe_to_sign("prepare", pp.view, pp.seq, digest):
            self.reject(sender, pp, "conflicts with a prepare cast before a restart")
            return
        slot = self.accept_slot(pp, digest, requests)
        self.send_prepare(slot)
        self.check_prepared(slot)

    def valid_requests(self, sender: int, pp: PrePrepare) -> list[Request] | None:
        """The proposal's requests if every one may be ordered now; ``None`` (recorded) if not."""
        out: list[Request] = []
        seen: set[RequestId] = set()
        unverified: list[bytes] = []
        lookup = self.mempool.lookup
        for raw in pp.proposal.txs:
            if len(raw) > self.cfg.max_tx_bytes:
                self.reject(sender, pp, "proposal holds an oversized transaction")
                return None
            # Usually the client sent it here too and it was decoded at admission.
            request = lookup(raw)
            if request is None:
                try:
                    request = Request.from_raw(raw)
                except CodecError:
                    self.reject(sender, pp, "proposal holds a malformed transaction")
                    return None
            rid = request.id
            if rid in seen:
                self.reject(sender, pp, "proposal holds a request twice")
                return None
            seen.add(rid)
            other = self.in_flight.get(rid)
            if other is not None and other != pp.seq:
                self.reject(sender, pp, "proposal holds a request already in flight")
                return None
            if not self.clients.is_new(request.client, request.seq):
                self.reject(sender, pp, "proposal holds a committed or stale request")
                return None
            if request.signed:
                if txid_of(raw) not in self.verified:
                    unverified.append(raw)
            elif self.cfg.require_signatures:
                self.reject(sender, pp, "proposal holds an unsigned transaction")
                return None
            elif unsigned_under_a_key(request.client, False):
                self.reject(sender, pp, f"proposal holds an {UNSIGNED_UNDER_A_KEY}")
                return None
            out.append(request)
        good = []
        for raw in unverified:
            if not Transaction.decode(raw).verify_signature(self.chain_id):
                self.reject(sender, pp, "proposal holds a transaction with a bad client signature")
                return None
            good.append(txid_of(raw))
        self.verified.add(good)
        return out

    def send_prepare(self, slot: Slot) -> None:
        pp = slot.preprepare
        signature = self.sign_vote(
            "prepare",
            pp.view,
            pp.seq,
            slot.digest,
            self.st.prepare_digest(pp.view, pp.seq, slot.digest),
        )
        self.prepares.add((pp.view, pp.seq, slot.digest), self.replica, signature)
        self.broadcast(Prepare(view=pp.view, seq=pp.seq, digest=slot.digest, signature=signature))

    def on_prepare(self, sender: int, msg: Prepare) -> None:
        if msg.view != self.view or self.in_view_change:
            self.note_view(sender, msg.view, msg)
            return
        if sender == self.leader(msg.view):
            self.reject(sender, msg, "the primary does not send prepares")
            return
        if not self.in_watermarks(msg.seq):
            return
        slot = self.slots.get(msg.seq)
        if slot is not None and slot.prepared and self.late_vote("prepare", sender, msg, slot):
            return
        if not self.sig_ok(
            sender, self.st.prepare_digest(msg.view, msg.seq, msg.digest), msg.signature
        ):
            self.reject(sender, msg, "bad prepare signature")
            return
        self.note_vote("prepare", sender, msg, self.prepares)
        self.prepares.add((msg.view, msg.seq, msg.digest), sender, msg.signature)
        if slot is not None:
            self.check_prepared(slot)

    def check_prepared(self, slot: Slot) -> None:
        """Prepared: the pre-prepare and 2f matching prepares from distinct backups."""
        if slot.prepared:
            return
        pp = slot.preprepare
        key = (pp.view, pp.seq, slot.digest)
        votes = self.prepares.votes(key)
        votes.pop(self.leader(pp.view), None)
        if len(votes) < self.quorum - 1:
            return
        chosen = sorted(votes.items())[: self.quorum - 1]
        qc = QuorumCertificate.from_votes(self.st.prepare_digest(*key), chosen, self.n)
        proof = PreparedProof(preprepare=pp, prepares=qc)
        slot.prepared = True
        self.durable.prepared[pp.seq] = proof
        self.persist(proof)
        signature = self.sign_vote(
            "commit", pp.view, pp.seq, slot.digest, self.st.commit_digest(*key)
        )
        self.commits.add(key, self.replica, signature)
        if not self.sign_early_checkpoint(slot):
            # No early checkpoint stands for it (see commit_proven): the commit goes out. One
            # that was signed is kept, and re-sent should the slot stall (retransmit).
            self.broadcast(
                Commit(view=pp.view, seq=pp.seq, digest=slot.digest, signature=signature)
            )
        self.check_committed(slot)

    def on_commit(self, sender: int, msg: Commit) -> None:
        if msg.view != self.view or self.in_view_change:
            self.note_view(sender, msg.view, msg)
            return
        if not self.in_watermarks(msg.seq):
            return
        slot = self.slots.get(msg.seq)
        if (
            slot is not None
            and slot.prepared
            and (slot.committed or sender in self.early_signers(slot))
            and self.late_vote("commit", sender, msg, slot)
        ):
            return
        if not self.sig_ok(
            sender, self.st.commit_digest(msg.view, msg.seq, msg.digest), msg.signature
        ):
            self.reject(sender, msg, "bad commit signature")
            return
        self.note_vote("commit", sender, msg, self.commits)
        self.commits.add((msg.view, msg.seq, msg.digest), sender, msg.signature)
        if slot is not None:
            self.check_committed(slot)

    def late_vote(self, kind: str, sender: int, msg: Prepare | Commit, slot: Slot) -> bool:
        """Whether a vote can be dropped unverified: it names the slot's view and digest, and
        what it would prove is proven already (the slot prepared, for a prepare; committed, or
        the sender's checkpoint counted for its commit, for a commit). Verifying it would cost
        an Ed25519 check and change nothing: per block and replica, a late prepare, a late
        commit, and every commit whose sender's early checkpoint came first. A vote for another
        digest, or from a sender already seen voting for another, is verified as any other:
        it may be equivocation, kept as evidence."""
        if msg.view != slot.preprepare.view or msg.digest != slot.digest:
            return False
        known = self.vote_digests.get((kind, msg.view, msg.seq, sender))
        if known is not None and known != msg.digest:
            return False
        self.late_votes += 1
        return True

    def early_signers(self, slot: Slot) -> dict[int, bytes]:
        """The replicas whose checkpoint for the block this replica signed early from
        ``slot`` (the next height, prepared in this view) is verified and counted."""
        early = self.early_block
        if early is None or early[0] is not slot.proposal or early[3] != self.view:
            return {}
        done = early[2]
        return self.checkpoints.get(slot.preprepare.seq, {}).get(
            (done.header.view, done.block_hash), {}
        )

    def check_committed(self, slot: Slot) -> None:
        """Committed-local: prepared and a Byzantine quorum of matching commits."""
        if slot.committed or not slot.prepared or not self.commit_proven(slot):
            return
        slot.committed = True
        self.execute_committed()

    def commit_proven(self, slot: Slot) -> bool:
        """Whether 2f+1 replicas' commits for a prepared slot are known, their early
        checkpoints counted as commits.

        A replica's verified checkpoint for the block signed early from this slot counts as
        its commit: an honest replica signs that checkpoint only once it has prepared the
        proposal in this view (see sign_early_checkpoint), and 2f+1 of them certify the block
        for the ledger on their own (any replica may append it from a peer with them). So a
        replica that signs the early checkpoint sends no commit in the normal case (it keeps
        it, and re-sends it should the slot stall): one request at a time, 4 alternating
        pairs of n = 4 testbeds, p50 6.10 -> 5.83 ms and replica CPU 9.7 -> 9.1 ms per
        request (at saturation no change: 22,261 and 22,266 tx/s). A replica that could not
        count the early checkpoints when they came (the slot below was not executed yet)
        counts them once it is (execute_committed); the commits of a slot re-proposed in a
        later view, which no early checkpoint stands for, are sent and counted as in PBFT."""
        pp = slot.preprepare
        key = (pp.view, pp.seq, slot.digest)
        return (
            self.commits.count(key) >= self.quorum
            or len(self.commits.voters(key) | self.early_signers(slot).keys()) >= self.quorum
        )

    # ================================================================ execution, checkpoints (4.3)

    def execute_committed(self) -> None:
        """Execute committed proposals in sequence order, each into a ledger block."""
        while True:
            slot = self.slots.get(self.exec_height + 1)
            if slot is None or not slot.prepared:
                break
            if not slot.committed:
                # Next in line now: its early checkpoint, and the others' ones it makes count.
                self.sign_early_checkpoint(slot)
                if not self.commit_proven(slot):
                    break
                slot.committed = True
            self.execute(slot.proposal, slot.requests)
        if self.is_primary:
            self.maybe_propose()

    def execute(self, proposal: Proposal, requests: list[Request]) -> None:
        """Execute the proposal committed at the next height into a ledger block."""
        height = self.exec_height + 1
        early, self.early_block = self.early_block, None
        if early is not None and early[0] is proposal and early[1] == self.exec_hash:
            done, sent_early = early[2], early[3] == self.view
        else:
            done, sent_early = self.build_block(proposal, requests), False
        header, kept, block_hash = done.header, done.requests, done.block_hash
        self.executed[height] = done
        self.exec_height, self.exec_hash = height, block_hash
        self.applied(height, kept, settled=requests)
        signature = (
            self.checkpoints.get(height, {}).get((header.view, block_hash), {}).get(self.replica)
        )
        if signature is None:
            signature = self.signer.sign_digest(done.statement)
            self.add_checkpoint_vote(height, header.view, block_hash, self.replica, signature)
        if not sent_early:  # sent at prepared in this view (see sign_early_checkpoint)
            self.broadcast(
                Checkpoint(
                    height=height, view=header.view, block_hash=block_hash, signature=signature
                )
            )
        self.last_progress = self.now
        self.backoff = 0
        self.certify()

    def build_block(self, proposal: Proposal, requests: list[Request]) -> Executed:
        """The block ``proposal`` makes at the next height, changing nothing.

        Only requests that are new at this point of the ledger go into the block: a request
        ordered twice (a Byzantine primary can get one request prepared at two sequence
        numbers, for instance across a replica's restart) executes once, as in PBFT, where a
        replica never re-executes a request it has already answered. The rule depends only on
        the ledger, so every honest replica builds the same block.
        """
        if len(requests) != len(proposal.txs):
            requests = self.decode_requests(proposal.txs)
        kept: list[Request] = []
        seen: set[RequestId] = set()
        for request in requests:
            rid = request.id
            if rid in seen or not self.clients.is_new(request.client, request.seq):
                continue
            seen.add(rid)
            kept.append(request)
        txs = tuple(r.raw for r in kept)
        header = make_header(
            chain_id=self.chain_id,
            height=self.exec_height + 1,
            prev_hash=self.exec_hash,
            txs=txs,
            protocol=self.protocol,
            view=proposal.view,
            proposer=proposal.proposer,
        )
        block_hash = header.hash()
        return Executed(header, txs, kept, block_hash, header.commit_statement(block_hash))

    def sign_early_checkpoint(self, slot: Slot) -> bool:
        """Sign the checkpoint of a prepared slot's block before the slot commits (PBFT's
        tentative execution, section 5.1, used for the certificate only), so the checkpoint
        goes out in place of the commit and a block is certified one message delay sooner.
        Returns whether it was signed and sent now.

        Only when every lower height is committed (and executed) and the slot's proposal was
        made in the current view, the view the block header names. Then each honest signer
        has prepared that proposal in that one view, and 2f+1 signatures imply f+1 honest
        replicas prepared it in one view: the request is committed, exactly what PBFT's
        commit quorum proves (a re-proposed request prepared in several views would not be,
        so re-proposals sign only once committed). Nothing is executed here; the block is
        built again, or taken from here, when the slot commits.
        """
        pp = slot.preprepare
        seq = pp.seq
        if (
            slot.committed
            or seq != self.exec_height + 1
            or pp.view != self.view
            or slot.proposal.view != pp.view
            or self.in_view_change
            or any(self.replica in votes for votes in self.checkpoints.get(seq, {}).values())
        ):
            return False
        done = self.build_block(slot.proposal, slot.requests)
        self.early_block = (slot.proposal, self.exec_hash, done, self.view)
        signature = self.signer.sign_digest(done.statement)
        view = done.header.view
        self.add_checkpoint_vote(seq, view, done.block_hash, self.replica, signature)
        self.broadcast(
            Checkpoint(height=seq, view=view, block_hash=done.block_hash, signature=signature)
        )
        self.early_checkpoints += 1
        return True

    @staticmethod
    def decode_requests(txs: Sequence[bytes]) -> list[Request]:
        """The decodable requests of a batch, in order (the same on every replica)."""
        out = []
        for raw in txs:
            try:
                out.append(Request.from_raw(raw))
            except CodecError:
                continue
        return out

    def applied(
        self, height: int, requests: list[Request], settled: list[Request] | None = None
    ) -> None:
        """Bookkeeping once a block's requests are in the executed state: the client table
        learns their places; they leave the pipeline and the pool, and so do ``settled`` (the
        whole proposal, when the block left out requests ordered before). A block holds only
        requests new at its height (build_block), so each is recorded."""
        self.clients.record_new(enumerate(requests), height)
        ids = [r.id for r in (requests if settled is None else settled)]
        forget = self.in_flight.pop
        for rid in ids:
            forget(rid, None)
        self.mempool.remove(ids)

    def add_checkpoint_vote(
        self, height: int, view: int, block_hash: bytes, replica: int, sig: bytes
    ) -> None:
        self.checkpoints.setdefault(height, {}).setdefault((view, block_hash), {}).setdefault(
            replica, sig
        )

    def on_checkpoint(self, sender: int, msg: Checkpoint) -> None:
        if msg.height <= self.cert_height:
            return
        if msg.height > self.checkpoint_heights.get(sender, 0):
            # A new checkpoint claims the block. Its re-sends do not claim it again once the
            # sender's ledger showed it uncertified (a block its signers executed, or prepared
            # and signed early, that never gathered a quorum): else f+1 such re-sends would keep
            # this replica "behind", and so from suspecting the primary, for good.
            self.checkpoint_heights[sender] = msg.height
            self.claims[sender] = max(self.claims.get(sender, 0), msg.height)
        if msg.height > self.cert_height + 2 * self.cfg.window:
            return  # far ahead: only counts as a claim (bounded memory); state transfer follows
        statement = self.checkpoint_statement(msg)
        if not self.sig_ok(sender, statement, msg.signature):
            self.reject(sender, msg, "bad checkpoint signature")
            return
        self.add_checkpoint_vote(msg.height, msg.view, msg.block_hash, sender, msg.signature)
        self.claim_if_certified(msg)
        self.certify()
        slot = self.slots.get(msg.height)
        if slot is not None and slot.prepared and not slot.committed:
            self.check_committed(slot)  # the checkpoint may stand for its signer's commit

    def claim_if_certified(self, msg: Checkpoint) -> None:
        """Once a quorum's checkpoints certify the block ``msg`` names, each signer claims it
        again, re-sends included: the block is certified, not merely executed, and those
        replicas' ledgers hold it or soon will. Without this, a replica that had fetched from
        them while the block was uncertified (so its re-sends stopped counting, see
        on_checkpoint) never claimed it again, and one that could not certify it itself (in a
        view change of its own, say) stayed behind for good."""
        votes = self.checkpoints.get(msg.height, {}).get((msg.view, msg.block_hash), {})
        if len(votes) < self.quorum:
            return
        for signer in votes:
            if signer != self.replica and self.claims.get(signer, 0) < msg.height:
                self.claims[signer] = msg.height

    def checkpoint_statement(self, msg: Checkpoint) -> bytes:
        """The ledger commit statement of the block the checkpoint names (see ledger.block)."""
        payload = encode_value([self.protocol, msg.view, msg.height, msg.block_hash])
        return self.commit_domain.digest(payload)

    def certify(self) -> None:
        """Blocks whose checkpoints reached a quorum become ledger blocks, in height order."""
        while True:
            height = self.cert_height + 1
            done = self.executed.get(height)
            if done is None:
                return
            votes = self.checkpoints.get(height, {}).get((done.header.view, done.block_hash), {})
            if len(votes) < self.quorum:
                return
            chosen = sorted(votes.items())[: self.quorum]
            qc = QuorumCertificate.from_votes(done.statement, chosen, self.n)
            block = Block(header=done.header, txs=done.txs, certificate=qc)
            del self.executed[height]
            self.checkpoints.pop(height, None)
            self.commit_block(block, done.requests, votes.get(self.replica))
            if height % self.cfg.checkpoint_interval == 0:
                self.make_stable(height)

    def commit_block(
        self, block: Block, requests: list[Request], signature: bytes | None = None
    ) -> None:
        """Hand a certified block to the ledger (``signature``: ours on it, if we made one)."""
        self.emit_committed(block)
        self.last_certified = self.now
        self.cert_height, self.cert_hash = block.height, block.hash()
        self.last_cert = CheckpointProof(header=block.header, certificate=block.certificate)
        if signature is None:
            signature = self.signer.sign_digest(block.header.commit_statement(self.cert_hash))
        self.last_checkpoint = Checkpoint(
            height=block.height,
            view=block.header.view,
            block_hash=self.cert_hash,
            signature=signature,
        )
        height = block.height
        self.reply_all([Reply(r.client, r.seq, height, p) for p, r in enumerate(requests)])

    def make_stable(self, height: int) -> None:
        """A stable checkpoint at ``height``: collect the log below it, move the watermarks."""
        if height <= self.stable:
            return
        self.stable = height
        for seq in [s for s in self.slots if s <= height]:
            del self.slots[seq]
        for tally in (self.prepares, self.commits):
            for key in [k for k in tally.tallied() if k[1] <= height]:
                tally.discard(key)
        for vote in [k for k in self.vote_digests if k[2] <= height]:
            del self.vote_digests[vote]
        self.durable.forget_below(height)
        self.persist_snapshot(self.durable.snapshot(height))
        if self.is_primary:
            self.maybe_propose()

    # ================================================================ view changes (4.4)

    def relay_aged(self) -> None:
        """Relay to the primary, once each, the requests that have waited here half a request
        timeout without appearing in a pre-prepare (4.1: a backup relays a request the client
        sent to all; the primary may not have it: the client's frame to it was lost, or this
        replica holds what it was sent while it lagged). Suspecting the primary before it had
        the request would take this replica out of the protocol by itself."""
        cutoff = self.now - self.cfg.request_timeout // 2
        if cutoff <= self.relayed_upto:
            return
        aged = self.mempool.waiting_between(self.relayed_upto, cutoff, MAX_RELAY_PENDING)
        self.relayed_upto = cutoff
        self.relay(r.raw for r in aged)

    def request_timer_expired(self) -> bool:
        """The primary is suspected (and not because this replica is behind) when a request has
        waited ``request_timeout`` ticks with no execution meanwhile (the timer restarts when
        a request executes, as in section 4.4), or ``starvation_factor`` times that in any
        case (a primary that serves others but never this one)."""
        oldest = self.mempool.oldest_tick(include_held=True)
        # A request known only from the primary's pre-prepare waits too (its client's copy,
        # sent here later, finds it in flight and is not pooled).
        exec_height = self.exec_height
        for seq, slot in self.slots.items():
            if (
                seq > exec_height
                and slot.requests
                and (oldest is None or slot.accepted_at < oldest)
            ):
                oldest = slot.accepted_at
        if oldest is None:
            return False
        timeout = self.cfg.request_timeout
        stalled = self.now - max(oldest, self.last_progress) > timeout
        starved = self.now - oldest > self.cfg.starvation_factor * timeout
        if not (stalled or starved):
            return False
        return self.fetching is None and not self.behind()

    def start_view_change(self, new_view: int, *, resume: bool = False) -> None:
        """Move to ``new_view`` and ask for it (``resume``: ask again for the current view,
        after a restart, without knowing whether its NEW-VIEW was installed)."""
        if resume:
            new_view = self.view
        elif new_view <= self.view:
            return
        self.view = new_view
        self.in_view_change = True
        self.view_changes_started += 0 if resume else 1
        if not resume:
            self.durable.view = new_view
            self.persist(ViewRecord(view=new_view))
        self.vc_timeout = min(
            self.cfg.view_change_timeout << self.backoff, self.cfg.max_view_change_timeout
        )
        # The wait runs once 2f+1 ask for this view (start_vc_timer); after a restart it runs at
        # once: the replica does not know what the others did meanwhile (those in the view send
        # its NEW-VIEW back; if none answers, it moves on rather than wait for askers).
        self.vc_deadline = self.now + self.vc_timeout if resume else None
        self.backoff += 1
        # Certificates from earlier views only (4.4): resumed after a restart, the request is
        # for the view the replica was in, and it may have prepared in that view.
        prepared = tuple(
            p
            for s, p in sorted(self.durable.prepared.items())
            if s > self.cert_height and p.preprepare.view < new_view
        )
        unsigned = ViewChange(
            new_view=new_view,
            replica=self.replica,
            checkpoint=self.last_cert,
            prepared=prepared,
            signature=bytes(64),
        )
        signature = self.signer.sign_digest(self.st.view_change.digest(unsigned.body()))
        vc = ViewChange(
            new_view=new_view,
            replica=self.replica,
            checkpoint=self.last_cert,
            prepared=prepared,
            signature=signature,
        )
        self.latest_vc[self.replica] = vc
        # What was in flight in the old view is proposed again unless NEW-VIEW re-proposes it.
        self.slots.clear()
        self.in_flight.clear()
        self.mempool.release(self.now)
        self.broadcast(vc)
        self.start_vc_timer()
        self.try_new_view()

    def start_vc_timer(self) -> None:
        """Start waiting for NEW-VIEW once 2f+1 replicas (this one included) ask for the view
        (4.5.2): a replica that asks alone does not move on to later views by itself, where
        the others, moving up at the same pace, would never catch it up; it stays, re-sending
        its VIEW-CHANGE, until others join it or it joins them."""
        if not self.in_view_change or self.vc_deadline is not None:
            return
        asking = sum(1 for vc in self.latest_vc.values() if vc.new_view == self.view)
        if asking >= self.quorum:
            self.vc_deadline = self.now + self.vc_timeout

    def validate_view_change(self, vc: ViewChange) -> str:
        """``""`` when ``vc`` is well signed and every proof in it holds, else the reason."""
        if not self.sig_ok(vc.replica, self.st.view_change.digest(vc.body()), vc.signature):
            return "bad view-change signature"
        stable = vc.stable_height
        if vc.checkpoint is not None:
            header = vc.checkpoint.header
            try:
                verify_certificate(
                    header, vc.checkpoint.certificate, self.committee_for(header.height)
                )
            except BlockError as exc:
                return f"view change checkpoint: {exc.reason}"
            if vc.checkpoint.header.chain_id != self.chain_id:
                return "view change checkpoint of another chain"
        seen: set[int] = set()
        for proof in vc.prepared:
            reason = self.validate_prepared(proof, vc.new_view, stable)
            if reason:
                return reason
            if proof.preprepare.seq in seen:
                return "view change lists a sequence number twice"
            seen.add(proof.preprepare.seq)
        return ""

    def validate_prepared(self, proof: PreparedProof, new_view: int, stable: int) -> str:
        pp = proof.preprepare
        if not stable < pp.seq <= stable + self.cfg.window:
            return "prepared certificate outside the view change's watermarks"
        if pp.view >= new_view:
            return "prepared certificate from a view not before the new one"
        if pp.proposal.seq != pp.seq:
            return "prepared proposal for another sequence number"
        digest = pp.proposal.digest()
        primary = self.leader(pp.view)
        if not self.sig_ok(
            primary, self.st.pre_prepare_digest(pp.view, pp.seq, digest), pp.signature
        ):
            return "prepared certificate with a bad pre-prepare signature"
        if primary in proof.prepares.signer_ids:
            return "prepared certificate counts the primary's prepare"
        try:
            proof.prepares.verify(
                self.committee,
                threshold=self.quorum - 1,
                statement=self.st.prepare_digest(pp.view, pp.seq, digest),
            )
        except InvalidCertificate as exc:
            return f"prepared certificate: {exc.reason}"
        return ""

    def on_view_change(self, sender: int, vc: ViewChange) -> None:
        if vc.replica != sender:
            self.reject(sender, vc, "view change relayed for another replica")
            return
        if vc.new_view == self.view and not self.in_view_change:
            self.resend_new_view(sender, vc)
            return
        known = self.latest_vc.get(sender)
        if known is not None and known.new_view >= vc.new_view:
            return
        if vc.new_view < self.view:
            return
        reason = self.validate_view_change(vc)
        if reason:
            self.reject(sender, vc, reason)
            return
        self.latest_vc[sender] = vc
        self.note_view(sender, vc.new_view, vc)
        self.join_if_asked()
        self.start_vc_timer()
        self.try_new_view()

    def resend_new_view(self, sender: int, vc: ViewChange) -> None:
        """``sender`` asks for the view this replica is in: it missed the NEW-VIEW, or restarted
        and asks again (its request may repeat the one it sent before the restart, and need
        not validate: it may list certificates prepared in this very view). Send it the NEW-VIEW
        installed here, at most once per view-change timeout per replica, on its signature."""
        nv = self.last_new_view
        if nv is None or nv.view != self.view:
            return
        last = self.new_view_resent.get(sender)
        if last is not None and self.now - last < self.cfg.view_change_timeout:
            return
        if not self.sig_ok(sender, self.st.view_change.digest(vc.body()), vc.signature):
            self.reject(sender, vc, "bad view-change signature")
            return
        self.new_view_resent[sender] = self.now
        self.send(sender, nv)

    def join_if_asked(self) -> None:
        """Join a view change that f+1 replicas ask for (the smallest such view above ours)."""
        current = self.view
        higher = sorted(
            vc.new_view
            for r, vc in self.latest_vc.items()
            if r != self.replica and vc.new_view > current
        )
        if len(higher) >= self.f + 1:
            self.start_view_change(higher[0])

    def note_view(self, sender: int, view: int, msg: Record) -> None:
        """A message for another view than ours. From an earlier one, it is refused (late or
        replayed: counted). From a later one, once its signature holds, it counts towards the
        f+1 replicas that move this one there to ask to join."""
        if view < self.view:
            self.reject(sender, msg, "message from an earlier view")
            return
        if view == self.view:
            return  # ours, while we change views: it is sent again once we are in it
        if not isinstance(msg, ViewChange) and not self.signed_for_its_view(sender, msg):
            self.reject(sender, msg, "bad signature on a message from a later view")
            return
        if view > self.seen_views.get(sender, -1):
            self.seen_views[sender] = view
        ahead = sorted((v for v in self.seen_views.values() if v > self.view), reverse=True)
        if len(ahead) >= self.f + 1 and not isinstance(msg, ViewChange):
            self.start_view_change(ahead[self.f])

    def signed_for_its_view(self, sender: int, msg: Record) -> bool:
        """Whether a pre-prepare, prepare or commit carries ``sender``'s signature for the view,
        sequence number and digest it names (not one replayed from elsewhere)."""
        if isinstance(msg, PrePrepare):
            statement = self.st.pre_prepare_digest(msg.view, msg.seq, msg.proposal.digest())
        elif isinstance(msg, Prepare):
            statement = self.st.prepare_digest(msg.view, msg.seq, msg.digest)
        elif isinstance(msg, Commit):
            statement = self.st.commit_digest(msg.view, msg.seq, msg.digest)
        else:
            return False
        return self.sig_ok(sender, statement, msg.signature)

    def try_new_view(self) -> None:
        """As primary of the view being changed to, send NEW-VIEW once 2f+1 ask for it."""
        if not self.in_view_change or self.leader(self.view) != self.replica:
            return
        asking = sorted((r, vc) for r, vc in self.latest_vc.items() if vc.new_view == self.view)
        if len(asking) < self.quorum:
            return
        chosen = tuple(vc for _, vc in asking[: self.quorum])
        plan = self.plan_new_view(self.view, chosen)
        if not all(self.safe_to_sign("pre-prepare", self.view, seq, p.digest()) for seq, p in plan):
            # Restarted after signing a different plan for this view: sending another would
            # equivocate. Let the view time out; the next primary takes over.
            return
        preprepares = []
        for seq, proposal in plan:
            digest = proposal.digest()
            signature = self.sign_vote(
                "pre-prepare",
                self.view,
                seq,
                digest,
                self.st.pre_prepare_digest(self.view, seq, digest),
            )
            preprepares.append(
                PrePrepare(view=self.view, seq=seq, proposal=proposal, signature=signature)
            )
        unsigned = NewView(
            view=self.view, view_changes=chosen, preprepares=tuple(preprepares), signature=bytes(64)
        )
        signature = self.signer.sign_digest(self.st.new_view.digest(unsigned.body()))
        nv = NewView(
            view=self.view, view_changes=chosen, preprepares=tuple(preprepares), signature=signature
        )
        self.broadcast(nv)
        self.install_new_view(nv)

    def plan_new_view(self, view: int, vcs: Sequence[ViewChange]) -> list[tuple[int, Proposal]]:
        """The O set of NEW-VIEW: for each sequence number from the highest checkpoint to the
        highest prepared request, the request prepared in the highest view, or a null request."""
        min_s = max(vc.stable_height for vc in vcs)
        best: dict[int, PreparedProof] = {}
        for vc in vcs:
            for proof in vc.prepared:
                seq = proof.preprepare.seq
                if seq <= min_s:
                    continue
                known = best.get(seq)
                if known is None or known.preprepare.view < proof.preprepare.view:
                    best[seq] = proof
        max_s = max(best, default=min_s)
        plan = []
        for seq in range(min_s + 1, max_s + 1):
            proof = best.get(seq)
            if proof is not None:
                plan.append((seq, proof.preprepare.proposal))
            else:
                plan.append((seq, Proposal(seq=seq, view=view, proposer=self.leader(view), txs=())))
        return plan

    def on_new_view(self, sender: int, nv: NewView) -> None:
        if nv.view < self.view or (nv.view == self.view and not self.in_view_change):
            return
        reason = self.validate_new_view(sender, nv)
        if reason:
            self.reject(sender, nv, reason)
            return
        if nv.view > self.view:
            self.view = nv.view
        self.install_new_view(nv)

    def validate_new_view(self, sender: int, nv: NewView) -> str:
        # Any replica may relay a NEW-VIEW (to one that missed it); what counts is the new
        # primary's signature on it, and on every pre-prepare in it.
        primary = self.leader(nv.view)
        if not self.sig_ok(primary, self.st.new_view.digest(nv.body()), nv.signature):
            return "new view not signed by its primary"
        senders = set()
        for vc in nv.view_changes:
            if vc.new_view != nv.view:
                return "new view carries a view change for another view"
            if vc.replica in senders:
                return "new view counts a replica's view change twice"
            senders.add(vc.replica)
            reason = self.validate_view_change(vc)
            if reason:
                return f"new view carries an invalid view change: {reason}"
        if len(senders) < self.quorum:
            return "new view without a quorum of view changes"
        plan = self.plan_new_view(nv.view, nv.view_changes)
        if len(plan) != len(nv.preprepares):
            return "new view's pre-prepares differ from what its view changes imply"
        for (seq, proposal), pp in zip(plan, nv.preprepares, strict=True):
            digest = pp.proposal.digest()
            if pp.view != nv.view or pp.seq != seq or digest != proposal.digest():
                return "new view's pre-prepares differ from what its view changes imply"
            if not self.sig_ok(
                primary, self.st.pre_prepare_digest(pp.view, seq, digest), pp.signature
            ):
                return "bad pre-prepare signature in new view"
        return ""

    def install_new_view(self, nv: NewView) -> None:
        self.in_view_change = False
        for vote in [k for k in self.vote_digests if k[1] < self.view]:
            del self.vote_digests[vote]
        self.durable.view = self.view
        self.persist(ViewRecord(view=self.view))
        self.last_new_view = nv
        self.slots.clear()
        self.in_flight.clear()
        self.mempool.release(self.now)
        min_s = max(vc.stable_height for vc in nv.view_changes)
        primary = self.leader(self.view) == self.replica
        for pp in nv.preprepares:
            requests = self.decode_requests(pp.proposal.txs)
            digest = pp.proposal.digest()
            slot = self.accept_slot(pp, digest, requests)
            if not primary and self.safe_to_sign("prepare", pp.view, pp.seq, digest):
                self.send_prepare(slot)
        if not primary:
            # What waits here, the new primary may never have been given (4.1).
            self.relay_pending(self.mempool, skip=self.in_flight)
        self.next_seq = max(self.exec_height, min_s, *(pp.seq for pp in nv.preprepares)) + 1
        if min_s > self.cert_height:
            peers = [
                vc.replica
                for vc in nv.view_changes
                if vc.stable_height == min_s and vc.replica != self.replica
            ]
            if peers:
                self.fetch_from(peers[0])
        for slot in list(self.slots.values()):
            self.check_prepared(slot)
        if self.is_primary:
            self.maybe_propose()

    def note_vote(
        self,
        kind: str,
        sender: int,
        msg: Prepare | Commit,
        tally: VoteTally[tuple[int, int, bytes], bytes],
    ) -> None:
        """Keep the evidence when this validly signed vote is ``sender``'s second of its view
        and sequence number, for another digest. The vote still counts for its digest: a
        Byzantine replica can vote both ways to different peers anyway, and quorums of 2f+1
        intersect in an honest replica whatever it does."""
        key = (kind, msg.view, msg.seq, sender)
        known = self.vote_digests.setdefault(key, msg.digest)
        if known == msg.digest:
            return
        signature = tally.votes((msg.view, msg.seq, known)).get(sender)
        if signature is not None and sender not in tally.voters((msg.view, msg.seq, msg.digest)):
            first = type(msg)(view=msg.view, seq=msg.seq, digest=known, signature=signature)
            self.evidence.append((first, msg))
            self.evidence_total += 1
            self.rejections.record(sender, kind, f"equivocation: two {kind}s for one slot")

    def record_equivocation(self, first: Record, second: Record) -> None:
        self.evidence.append((first, second))
        self.evidence_total += 1
        self.reject(
            self.leader(self.view),
            second,
            "equivocation: two pre-prepares for one view and sequence",
        )

    # ================================================================ state transfer (4.5)

    def behind(self) -> bool:
        """f+1 replicas report certified blocks above our ledger, and our ledger is not moving
        (blocks we executed but could not certify, because the others had moved on, count as
        missing: fetching them brings their certificates)."""
        ahead = sum(1 for h in self.claims.values() if h > self.cert_height)
        return ahead >= self.f + 1 and self.now - self.last_certified > self.cfg.retransmit_interval

    def maybe_fetch(self) -> None:
        if self.fetching is not None:
            if self.now < self.fetching[1]:
                return
            self.fetching = None
        if not self.behind():
            return
        peers = sorted((h, r) for r, h in self.claims.items() if h > self.cert_height)
        self.fetch_from(peers[(self.now // self.cfg.retransmit_interval) % len(peers)][1])

    def fetch_from(self, peer: int) -> None:
        self.fetching = (peer, self.now + 2 * self.cfg.retransmit_interval)
        self.send(peer, BlockRequest(start=self.cert_height + 1, count=FETCH_BATCH))

    def on_block_response(self, sender: int, msg: BlockResponse) -> None:
        self.claims[sender] = msg.height  # what its ledger holds, whatever it executed
        blocks = self.fetched_extension(sender, msg, self.cert_height, self.cert_hash)
        for block in blocks:
            # Adopting a block can certify blocks this replica had executed, past this one.
            if block.height == self.cert_height + 1:
                self.adopt_block(block)
        progressed = bool(blocks)
        if self.fetching is not None and self.fetching[0] == sender:
            self.fetching = None
        if progressed:
            self.last_progress = self.now
            if msg.height > self.cert_height:
                self.fetch_from(sender)
            self.execute_committed()

    def adopt_block(self, block: Block) -> None:
        """Append a verified, certified block fetched from a peer."""
        height = block.height
        mine = self.executed.pop(height, None)
        if mine is not None:
            if mine.block_hash != block.hash():
                raise SafetyViolation(
                    f"replica {self.replica} executed a different block at height {height} "
                    "than a quorum certified"
                )
            requests = mine.requests
        else:
            requests = requests_of(block)
            self.exec_height, self.exec_hash = height, block.hash()
            self.applied(height, requests)
        self.checkpoints.pop(height, None)
        self.slots.pop(height, None)
        self.commit_block(block, requests)
        if self.exec_height < height:
            self.exec_height, self.exec_hash = height, block.hash()
        self.make_stable(height)
        self.certify()

    # ================================================================ retransmission

    def retransmit(self) -> None:
        """Re-send our part of unfinished work, so lost messages do not stall it, and tell the
        others how far our ledger is (a replica that fell behind learns it and fetches)."""
        if self.last_checkpoint is not None:
            self.broadcast(self.last_checkpoint)
        if self.in_view_change:
            vc = self.latest_vc.get(self.replica)
            if vc is not None and vc.new_view == self.view:
                self.broadcast(vc)
            return
        # Until a block is certified here (so 2f+1 replicas executed it), others may still need
        # our part of it; after that, a replica that missed it fetches the certified block.
        stale = self.now - self.cfg.retransmit_interval
        for seq in sorted(self.slots):
            slot = self.slots[seq]
            if seq <= self.cert_height or slot.accepted_at > stale:
                continue
            pp = slot.preprepare
            key = (pp.view, pp.seq, slot.digest)
            if self.leader(pp.view) == self.replica:
                self.broadcast(pp)
            elif self.replica in self.prepares.voters(key):
                self.broadcast(
                    Prepare(
                        view=pp.view,
                        seq=pp.seq,
                        digest=slot.digest,
                        signature=self.prepares.votes(key)[self.replica],
                    )
                )
            if slot.prepared and self.replica in self.commits.voters(key):
                self.broadcast(
                    Commit(
                        view=pp.view,
                        seq=pp.seq,
                        digest=slot.digest,
                        signature=self.commits.votes(key)[self.replica],
                    )
                )
        for height in sorted(self.executed):
            done = self.executed[height]
            votes = self.checkpoints.get(height, {}).get((done.header.view, done.block_hash), {})
            mine = votes.get(self.replica)
            if mine is not None:
                self.broadcast(
                    Checkpoint(
                        height=height,
                        view=done.header.view,
                        block_hash=done.block_hash,
                        signature=mine,
                    )
                )

    # ================================================================ status

    def status(self) -> CoreStatus:
        role = (
            "view-change" if self.in_view_change else ("primary" if self.is_primary else "backup")
        )
        return CoreStatus(
            protocol=self.protocol,
            replica=self.replica,
            role=role,
            view=self.view,
            leader=None if self.in_view_change else self.leader(self.view),
            height=self.cert_height,
            pending=len(self.mempool),
            extra={
                "view_changes": self.view_changes_started,
                "executed": self.exec_height,
                "early_checkpoints": self.early_checkpoints,
                "late_votes": self.late_votes,
                "stable": self.stable,
                "watermarks": (self.low, self.high),
                "evidence": self.evidence_total,
                "rejected": self.rejections.total,
                "relayed": self.relayed,
                "relayed_in": self.relayed_in,
            },
        )

    _handlers = {
        PrePrepare: on_preprepare,
        Prepare: on_prepare,
        Commit: on_commit,
        Checkpoint: on_checkpoint,
        ViewChange: on_view_change,
        NewView: on_new_view,
        BlockResponse: on_block_response,
        Relay: on_relay,
    }

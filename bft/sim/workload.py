"""Simulated clients: they submit, retry on timeout, and record what was acknowledged.

A client sends each request to every replica (so a faulty leader cannot silently drop it), or,
for a share ``alone`` of new requests, to one replica alone, as a client does to the leader it
believes in (which may have been replaced, or never have led); a retry goes to every replica. It
keeps at most ``max_inflight`` outstanding. A request is *acknowledged* once ``ack_quorum``
distinct replicas (f+1 in the BFT modes, one in Raft) report the same place in the ledger, and
*refused* once as many report the same error. A request still unanswered after ``max_attempts``
sends is *indeterminate*: it may or may not commit, but never twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from bft.core.ready import Reply
from bft.core.requests import Request
from crypto import SigningKey
from ledger import Transaction


class Outcome(Enum):
    PENDING = "pending"
    ACKED = "acked"
    REFUSED = "refused"
    INDETERMINATE = "indeterminate"


@dataclass
class Submission:
    request: Request
    client: int
    first_sent: int
    last_sent: int
    attempts: int = 1
    outcome: Outcome = Outcome.PENDING
    place: tuple[int, int] | None = None
    acked_at: int = 0
    votes: dict[tuple[int, int] | str, set[int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    clients: int = 3
    requests_per_client: int = 20
    max_inflight: int = 4
    submit_every: int = 2_000
    """Microseconds between a client's submissions when it has room."""
    timeout: int = 400_000
    max_attempts: int = 6
    payload_size: int = 32
    signed: bool = False
    """Clients sign with real Ed25519 (slow; for the share of runs that check S4 signatures)."""
    alone: float = 0.0
    """Share of new requests sent to one replica (chosen at random) alone."""
    client_prefix: bytes = b"client"
    """Unsigned clients are ``<prefix>-<i>``: give runs that share a ledger different prefixes
    (a client that reused an identity and sequence numbers would be answered from old commits)."""


class Workload:
    def __init__(
        self, config: WorkloadConfig, rng: random.Random, chain_id: str, ack_quorum: int
    ) -> None:
        self.config = config
        self.rng = rng
        self.chain_id = chain_id
        self.ack_quorum = ack_quorum
        self.submissions: dict[tuple[bytes, int], Submission] = {}
        self.sent_raw: set[bytes] = set()
        self._next_seq = [1] * config.clients
        self._next_submit = [0] * config.clients
        self._keys = (
            [SigningKey(rng.randbytes(32)) for _ in range(config.clients)] if config.signed else []
        )

    def client_id(self, client: int) -> bytes:
        if self.config.signed:
            return self._keys[client].public_key.raw
        return b"%s-%d" % (self.config.client_prefix, client)

    def _make(self, client: int, seq: int) -> Request:
        payload = b"%d:%d:" % (client, seq) + self.rng.randbytes(self.config.payload_size)
        if self.config.signed:
            tx = Transaction.signed(self._keys[client], self.chain_id, seq, payload)
        else:
            tx = Transaction(client=self.client_id(client), seq=seq, payload=payload, signature=b"")
        return Request.from_tx(tx)

    def inflight(self, client: int) -> int:
        cid = self.client_id(client)
        return sum(
            1 for (c, _), s in self.submissions.items() if c == cid and s.outcome is Outcome.PENDING
        )

    def poll(self, now: int) -> list[Request]:
        """Requests to send now: new ones where a client has room, and retries that are due."""
        out: list[Request] = []
        cfg = self.config
        for client in range(cfg.clients):
            if self._next_seq[client] > cfg.requests_per_client or now < self._next_submit[client]:
                continue
            if self.inflight(client) >= cfg.max_inflight:
                continue
            seq = self._next_seq[client]
            self._next_seq[client] += 1
            self._next_submit[client] = now + cfg.submit_every
            request = self._make(client, seq)
            self.submissions[request.id] = Submission(request, client, now, now)
            self.sent_raw.add(request.raw)
            out.append(request)
        for sub in self.submissions.values():
            if sub.outcome is not Outcome.PENDING or now - sub.last_sent < cfg.timeout:
                continue
            if sub.attempts >= cfg.max_attempts:
                sub.outcome = Outcome.INDETERMINATE
                continue
            sub.attempts += 1
            sub.last_sent = now
            out.append(sub.request)
        return out

    def on_reply(self, replica: int, reply: Reply, now: int) -> None:
        sub = self.submissions.get((reply.client, reply.seq))
        if sub is None or sub.outcome in (Outcome.ACKED, Outcome.REFUSED):
            return
        key: tuple[int, int] | str = reply.error or (reply.height, reply.position)
        voters = sub.votes.setdefault(key, set())
        voters.add(replica)
        if len(voters) >= self.ack_quorum:
            if reply.error:
                sub.outcome = Outcome.REFUSED
            else:
                sub.outcome = Outcome.ACKED
                sub.place = (reply.height, reply.position)
                sub.acked_at = now

    def done(self) -> bool:
        cfg = self.config
        return all(n > cfg.requests_per_client for n in self._next_seq) and all(
            s.outcome is not Outcome.PENDING for s in self.submissions.values()
        )

    def pending(self) -> list[Submission]:
        return [s for s in self.submissions.values() if s.outcome is Outcome.PENDING]

    def acked(self) -> list[Submission]:
        return [s for s in self.submissions.values() if s.outcome is Outcome.ACKED]

    def counts(self) -> dict[str, int]:
        out = {o.value: 0 for o in Outcome}
        for s in self.submissions.values():
            out[s.outcome.value] += 1
        return out

    def latencies(self) -> list[int]:
        return sorted(s.acked_at - s.first_sent for s in self.acked())

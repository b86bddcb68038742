"""Driving PBFT cores by hand: signed message factories and a router, for rule-level tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bft.core.interface import CoreContext, LedgerState
from bft.core.ready import BROADCAST, Reply
from bft.core.requests import Request
from bft.pbft import PbftConfig, PbftCore
from bft.pbft.messages import (
    Checkpoint,
    Commit,
    Prepare,
    PreparedProof,
    PrePrepare,
    Proposal,
    Statements,
    ViewChange,
)
from crypto import QuorumCertificate, SigningKey
from crypto.codec import Record
from crypto.insecure import InsecureFastCommittee, InsecureFastSigner
from ledger import Block, Transaction

CHAIN = "pbft-test"


def committee_and_signers(n: int) -> tuple[InsecureFastCommittee, list[InsecureFastSigner]]:
    keys = [SigningKey(bytes([i + 1]) * 32).public_key for i in range(n)]
    return InsecureFastCommittee(CHAIN, keys, "pbft"), [InsecureFastSigner(k) for k in keys]


def request(client: int, seq: int, payload: bytes = b"x") -> Request:
    tx = Transaction(client=b"c%d" % client, seq=seq, payload=payload, signature=b"")
    return Request.from_tx(tx)


@dataclass
class Collected:
    persist: list[Record] = field(default_factory=list)
    replaced: bool = False
    committed: list[Block] = field(default_factory=list)
    messages: list[tuple[int, Record]] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    def sent(self, kind: type[Record]) -> list[Record]:
        return [m for _, m in self.messages if isinstance(m, kind)]


def drain(core: PbftCore) -> Collected:
    """Carry out every Ready the core has, as a driver would, and return what it asked for."""
    out = Collected()
    while (ready := core.ready()) is not None:
        if ready.persist_replaces:
            out.persist = list(ready.persist)
            out.replaced = True
        else:
            out.persist += ready.persist
        out.committed += ready.committed
        out.messages += [(m.to, m.message) for m in ready.messages]
        out.replies += ready.replies
        core.advance(ready)
    return out


class Cluster:
    """``n`` PBFT cores and a router that delivers what they send, optionally filtered."""

    def __init__(
        self, n: int = 4, config: PbftConfig | None = None, *, down: Iterable[int] = ()
    ) -> None:
        self.n = n
        self.config = config or PbftConfig()
        self.committee, self.signers = committee_and_signers(n)
        self.st = Statements(CHAIN)
        self.cores = [self.make(i) for i in range(n)]
        self.down = set(down)
        self.ledgers: list[list[Block]] = [[] for _ in range(n)]
        self.persisted: list[list[Record]] = [[] for _ in range(n)]
        self.queue: list[tuple[int, int, Record]] = []

    def make(
        self, i: int, persisted: Sequence[Record] = (), ledger: Sequence[Block] = ()
    ) -> PbftCore:
        context = CoreContext(
            committee=self.committee,
            replica=i,
            signer=self.signers[i],
            ledger=LedgerState.of_blocks(CHAIN, list(ledger)),
            persisted=tuple(persisted),
            config=self.config,
        )
        return PbftCore(context)

    def collect(self, i: int) -> Collected:
        got = drain(self.cores[i])
        if got.replaced:
            self.persisted[i] = list(got.persist)
        else:
            self.persisted[i] += got.persist
        self.ledgers[i] += got.committed
        for to, message in got.messages:
            targets = range(self.n) if to == BROADCAST else (to,)
            self.queue += [(i, t, message) for t in targets if t != i]
        return got

    def restart(self, i: int) -> None:
        self.cores[i] = self.make(i, self.persisted[i], self.ledgers[i])
        self.collect(i)

    def propose(
        self, req: Request, to: Iterable[int] | None = None, *, alone: bool = False
    ) -> None:
        for i in to if to is not None else range(self.n):
            if i not in self.down:
                self.cores[i].propose(req, alone=alone)
                self.collect(i)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for i in range(self.n):
                if i not in self.down:
                    self.cores[i].tick()
                    self.collect(i)

    def run(
        self,
        keep: Callable[[int, int, Record], bool] = lambda s, d, m: True,
        max_steps: int = 100_000,
    ) -> None:
        """Deliver queued messages (and what they cause) until quiet; ``keep`` filters them."""
        steps = 0
        while self.queue and steps < max_steps:
            src, dst, message = self.queue.pop(0)
            steps += 1
            if dst in self.down or src in self.down or not keep(src, dst, message):
                continue
            self.cores[dst].step(src, message)
            self.collect(dst)

    def heights(self) -> list[int]:
        return [len(ledger) for ledger in self.ledgers]

    # -- hand-made signed messages

    def sign(self, replica: int, digest: bytes) -> bytes:
        return self.signers[replica].sign_digest(digest)

    def preprepare(
        self,
        view: int,
        seq: int,
        txs: Sequence[bytes],
        *,
        primary: int | None = None,
        proposal_view: int | None = None,
    ) -> PrePrepare:
        primary = view % self.n if primary is None else primary
        proposal = Proposal(
            seq=seq,
            view=view if proposal_view is None else proposal_view,
            proposer=primary,
            txs=tuple(txs),
        )
        digest = proposal.digest()
        return PrePrepare(
            view=view,
            seq=seq,
            proposal=proposal,
            signature=self.sign(primary, self.st.pre_prepare_digest(view, seq, digest)),
        )

    def prepare(self, replica: int, view: int, seq: int, digest: bytes) -> Prepare:
        return Prepare(
            view=view,
            seq=seq,
            digest=digest,
            signature=self.sign(replica, self.st.prepare_digest(view, seq, digest)),
        )

    def commit(self, replica: int, view: int, seq: int, digest: bytes) -> Commit:
        return Commit(
            view=view,
            seq=seq,
            digest=digest,
            signature=self.sign(replica, self.st.commit_digest(view, seq, digest)),
        )

    def prepared_proof(self, pp: PrePrepare, backups: Sequence[int]) -> PreparedProof:
        digest = pp.proposal.digest()
        statement = self.st.prepare_digest(pp.view, pp.seq, digest)
        qc = QuorumCertificate.from_votes(
            statement, [(b, self.sign(b, statement)) for b in backups], self.n
        )
        return PreparedProof(preprepare=pp, prepares=qc)

    def view_change(
        self, replica: int, new_view: int, prepared: Sequence[PreparedProof] = ()
    ) -> ViewChange:
        unsigned = ViewChange(
            new_view=new_view,
            replica=replica,
            checkpoint=None,
            prepared=tuple(prepared),
            signature=bytes(64),
        )
        return ViewChange(
            new_view=new_view,
            replica=replica,
            checkpoint=None,
            prepared=tuple(prepared),
            signature=self.sign(replica, self.st.view_change.digest(unsigned.body())),
        )

    def checkpoint(self, replica: int, block: Block) -> Checkpoint:
        h = block.header
        return Checkpoint(
            height=h.height,
            view=h.view,
            block_hash=h.hash(),
            signature=self.sign(replica, h.commit_statement()),
        )

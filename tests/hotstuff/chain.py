"""Building HotStuff blocks, QCs, TCs and proposals by hand, and driving one core with them.

A committee of four with real Ed25519 keys; the leader of view ``v`` is ``v % 3`` (configured),
so replica 3, the one usually under test, never leads and the transcript is all ours. :class:`Driver` feeds one core messages as if they came from its peers and collects
what it outputs, so a test reads as a transcript of the paper's rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bft.core.interface import CoreContext, LedgerState
from bft.core.ready import Ready
from bft.hotstuff import (
    QC,
    TC,
    CommitCertificate,
    HotStuffBlock,
    HotStuffConfig,
    HotStuffCore,
    Proposal,
    Statements,
    Timeout,
    Vote,
    genesis_qc,
)
from crypto import Committee, QuorumCertificate, SigningKey
from crypto.codec import Record
from ledger import Block, Transaction, make_header

CHAIN = "hs-test"
N = 4
KEYS = [SigningKey(bytes([i + 11]) * 32) for i in range(N)]
COMMITTEE = Committee(CHAIN, [k.public_key for k in KEYS], "hotstuff")
ST = Statements(CHAIN)
GENESIS = genesis_qc(CHAIN, N)
LEADERS = {v: v % 3 for v in range(1, 200)}
CONFIG = HotStuffConfig(leaders=LEADERS)


def leader(view: int) -> int:
    return LEADERS[view]


def tx(seq: int, client: bytes = b"client-a", payload: bytes = b"x") -> bytes:
    return Transaction(client=client, seq=seq, payload=payload, signature=b"").encode()


def block_on(
    justify: QC, view: int, txs: Sequence[bytes] = (), proposer: int | None = None
) -> HotStuffBlock:
    """A block of ``view`` on top of the block ``justify`` certifies."""
    header = make_header(
        chain_id=CHAIN,
        height=justify.height + 1,
        prev_hash=justify.block_hash,
        txs=tuple(txs),
        protocol="hotstuff",
        view=view,
        proposer=leader(view) if proposer is None else proposer,
    )
    return HotStuffBlock(header=header, txs=tuple(txs), justify=justify)


def qc_of(block: HotStuffBlock, signers: Iterable[int] = (0, 1, 2)) -> QC:
    header = block.header
    block_hash = header.hash()
    statement = ST.vote_digest(header.view, header.height, block_hash)
    votes = QuorumCertificate.from_votes(
        statement, [(i, KEYS[i].sign_digest(statement)) for i in signers], N
    )
    return QC(view=header.view, height=header.height, block_hash=block_hash, votes=votes)


def certificate_for(block: HotStuffBlock) -> CommitCertificate:
    """The ledger certificate of ``block``: commit votes of replicas 0, 1 and 2."""
    block_hash = block.header.hash()
    statement = block.header.commit_statement(block_hash)
    votes = [(i, KEYS[i].sign_digest(statement)) for i in (0, 1, 2)]
    return CommitCertificate(
        height=block.height,
        view=block.view,
        block_hash=block_hash,
        certificate=QuorumCertificate.from_votes(statement, votes, N),
    )


def tc_of(view: int, high_qc: QC, signers: Iterable[int] = (0, 1, 2)) -> TC:
    statement = ST.timeout_digest(view)
    votes = QuorumCertificate.from_votes(
        statement, [(i, KEYS[i].sign_digest(statement)) for i in signers], N
    )
    return TC(view=view, votes=votes, high_qc=high_qc)


def propose(block: HotStuffBlock, tc: TC | None = None, key: int | None = None) -> Proposal:
    header = block.header
    signer = KEYS[header.proposer if key is None else key]
    signature = signer.sign_digest(ST.proposal_digest(header.view, header.hash()))
    return Proposal(block=block, tc=tc, signature=signature, certificates=())


def timeout(
    sender: int, view: int, high_qc: QC, high_tc: TC | None = None, vote: Vote | None = None
) -> Timeout:
    previous = KEYS[sender].sign_digest(ST.timeout_digest(view - 1)) if view > 1 else b""
    return Timeout(
        view=view,
        high_qc=high_qc,
        high_tc=high_tc,
        vote=vote,
        commits=(),
        signature=KEYS[sender].sign_digest(ST.timeout_digest(view)),
        previous=previous,
    )


@dataclass
class Driver:
    """One core, fed by hand; ``out`` keeps every message it sent, ``log`` its durable log."""

    core: HotStuffCore
    out: list[tuple[int, Record]] = field(default_factory=list)
    log: list[Record] = field(default_factory=list)
    committed: list[Block] = field(default_factory=list)
    readies: list[Ready] = field(default_factory=list)

    def pump(self) -> None:
        while (ready := self.core.ready()) is not None:
            self.readies.append(ready)
            if ready.persist_replaces:
                self.log = list(ready.persist)
            else:
                self.log.extend(ready.persist)
            self.committed.extend(ready.committed)
            self.out.extend((o.to, o.message) for o in ready.messages)
            self.core.advance(ready)

    def step(self, sender: int, message: Record) -> None:
        self.core.step(sender, message)
        self.pump()

    def sent(self, kind: type[Record], to: int | None = None) -> list[Record]:
        return [m for t, m in self.out if isinstance(m, kind) and (to is None or t == to)]

    def votes(self) -> list[Vote]:
        return [m for m in self.sent(Vote)]  # type: ignore[misc]

    def clear(self) -> None:
        self.out.clear()

    def restart(self) -> Driver:
        """A new core built from this one's durable log and ledger (a crash and restart)."""
        core = make_core(self.core.replica, persisted=self.log, ledger=self.committed)
        driver = Driver(core, log=list(self.log), committed=list(self.committed))
        driver.pump()
        return driver


def make_core(
    replica: int = 3,
    *,
    persisted: Sequence[Record] = (),
    ledger: Sequence[Block] = (),
    config: HotStuffConfig | None = CONFIG,
) -> HotStuffCore:
    context = CoreContext(
        committee=COMMITTEE,
        replica=replica,
        signer=KEYS[replica],
        ledger=LedgerState.of_blocks(CHAIN, ledger),
        persisted=tuple(persisted),
        config=config,
    )
    return HotStuffCore(context)


def driver(replica: int = 3, **kwargs: object) -> Driver:
    d = Driver(make_core(replica, **kwargs))  # type: ignore[arg-type]
    d.pump()
    return d

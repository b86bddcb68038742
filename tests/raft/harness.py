"""Driving Raft cores by hand: a cluster with a router that delivers what they send, lets a test
drop or hold messages, crash and restart replicas, and checks the five Raft properties after
every step (tests/raft/properties.py). Logs can be given up front, as hash chains of entries
with chosen terms (the paper's figures)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bft.core.interface import CoreContext, LedgerState, serve_block_request
from bft.core.messages import BlockRequest
from bft.core.ready import BROADCAST, Ready, Reply
from bft.core.requests import Request
from bft.raft import LEADER, Entry, RaftConfig, RaftCore, TermRecord
from crypto import SigningKey
from crypto.codec import Record
from crypto.insecure import InsecureFastCommittee, InsecureFastSigner
from ledger import Block, Transaction, genesis_hash, make_header

from .properties import RaftChecker

CHAIN = "raft-test"

Keep = Callable[[int, int, Record], bool]


def committee_and_signers(n: int) -> tuple[InsecureFastCommittee, list[InsecureFastSigner]]:
    keys = [SigningKey(bytes([i + 1]) * 32).public_key for i in range(n)]
    return InsecureFastCommittee(CHAIN, keys, "raft"), [InsecureFastSigner(k) for k in keys]


def request(client: int, seq: int, payload: bytes = b"x") -> Request:
    tx = Transaction(client=b"c%d" % client, seq=seq, payload=payload, signature=b"")
    return Request.from_tx(tx)


def log_of(terms: Sequence[int], *, tag: str = "") -> list[Entry]:
    """A hash chain of entries from genesis with these terms. The entry at ``(index, term)``
    depends only on the terms up to it, so logs built from common prefixes share entries, as
    the Log Matching property says they must."""
    out: list[Entry] = []
    prev = genesis_hash(CHAIN)
    for index, term in enumerate(terms, start=1):
        path = ".".join(map(str, terms[:index]))
        tx = Transaction(
            client=b"fig", seq=index * 1000 + term, payload=f"{tag}{path}".encode(), signature=b""
        ).encode()
        header = make_header(
            chain_id=CHAIN,
            height=index,
            prev_hash=prev,
            txs=(tx,),
            protocol="raft",
            view=term,
            proposer=0,
        )
        out.append(Entry(header=header, txs=(tx,)))
        prev = header.hash()
    return out


@dataclass
class Node:
    index: int
    core: RaftCore | None = None
    alive: bool = True
    wal: list[Record] = field(default_factory=list)
    ledger: list[Block] = field(default_factory=list)


class Cluster:
    """``n`` Raft cores, a FIFO router, and the property checker after every step."""

    def __init__(
        self,
        n: int = 3,
        config: RaftConfig | None = None,
        *,
        logs: dict[int, tuple[int, Sequence[Entry]]] | None = None,
        configs: dict[int, RaftConfig] | None = None,
    ) -> None:
        self.n = n
        self.config = config or RaftConfig()
        self.configs = configs or {}
        self.committee, self.signers = committee_and_signers(n)
        self.nodes = [Node(i) for i in range(n)]
        for i, (term, entries) in (logs or {}).items():
            self.nodes[i].wal = [TermRecord(term=term, voted_for=None), *entries]
        self.queue: list[tuple[int, int, Record]] = []
        self.blocked: set[tuple[int, int]] = set()
        self.replies: list[tuple[int, Reply]] = []
        self.readies: list[tuple[int, Ready]] = []
        self.delivered: Counter[str] = Counter()
        self.checker = RaftChecker(CHAIN, "harness")
        for node in self.nodes:
            self.start(node)

    # ------------------------------------------------------------------ plumbing

    def core(self, i: int) -> RaftCore:
        core = self.nodes[i].core
        if core is None:
            raise AssertionError(f"replica {i} is down")
        return core

    def start(self, node: Node) -> None:
        context = CoreContext(
            committee=self.committee,
            replica=node.index,
            signer=self.signers[node.index],
            ledger=LedgerState.of_blocks(CHAIN, node.ledger),
            persisted=tuple(node.wal),
            config=self.configs.get(node.index, self.config),
        )
        node.core = RaftCore(context)
        node.alive = True
        self.drain(node)

    def drain(self, node: Node) -> None:
        core = node.core
        while node.alive and core is not None and (ready := core.ready()) is not None:
            self.readies.append((node.index, ready))
            if ready.persist_replaces:
                node.wal = list(ready.persist)
            else:
                node.wal += ready.persist
            for block in ready.committed:
                prev = node.ledger[-1].hash() if node.ledger else genesis_hash(CHAIN)
                if block.height != len(node.ledger) + 1 or block.header.prev_hash != prev:
                    raise AssertionError(f"replica {node.index} appended a non-extending block")
                node.ledger.append(block)
            for out in ready.messages:
                targets = range(self.n) if out.to == BROADCAST else (out.to,)
                self.queue += [(node.index, t, out.message) for t in targets if t != node.index]
            self.replies += [(node.index, r) for r in ready.replies]
            core.advance(ready)
        self.checker.check_nodes(self.nodes)

    # ------------------------------------------------------------------ faults

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        node.alive = False
        node.core = None
        self.queue = [(s, d, m) for s, d, m in self.queue if d != i]

    def restart(self, i: int) -> None:
        self.start(self.nodes[i])

    def isolate(self, i: int) -> None:
        for j in range(self.n):
            if j != i:
                self.blocked |= {(i, j), (j, i)}

    def cut(self, src: int, dst: int) -> None:
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked.clear()

    # ------------------------------------------------------------------ inputs

    def deliver(self, keep: Keep = lambda s, d, m: True, max_steps: int = 100_000) -> None:
        """Deliver queued messages (and what they cause) until quiet; ``keep`` filters them."""
        steps = 0
        while self.queue and steps < max_steps:
            src, dst, message = self.queue.pop(0)
            steps += 1
            node = self.nodes[dst]
            if not node.alive or (src, dst) in self.blocked or not keep(src, dst, message):
                continue
            self.delivered[type(message).__name__] += 1
            if isinstance(message, BlockRequest):
                response = serve_block_request(
                    message, len(node.ledger), lambda h, blocks=node.ledger: blocks[h - 1]
                )
                self.queue.append((dst, src, response))
                continue
            self.core(dst).step(src, message)
            self.drain(node)

    def tick(self, times: int = 1, only: Iterable[int] | None = None) -> None:
        for _ in range(times):
            for node in self.nodes:
                if node.alive and (only is None or node.index in only):
                    self.core(node.index).tick()
                    self.drain(node)

    def run(self, ticks: int, keep: Keep = lambda s, d, m: True) -> None:
        """Tick everyone and deliver everything, ``ticks`` times."""
        for _ in range(ticks):
            self.tick()
            self.deliver(keep)

    def propose(
        self, req: Request, to: Iterable[int] | None = None, *, alone: bool = False
    ) -> None:
        for i in to if to is not None else range(self.n):
            node = self.nodes[i]
            if node.alive:
                self.core(i).propose(req, alone=alone)
                self.drain(node)

    def campaign(self, i: int) -> None:
        self.core(i).campaign()
        self.drain(self.nodes[i])

    def elect(self, i: int, keep: Keep = lambda s, d, m: True) -> None:
        """Make ``i`` stand for election and deliver until quiet; it must win."""
        self.campaign(i)
        self.deliver(keep)
        if self.core(i).role != LEADER:
            raise AssertionError(f"replica {i} did not win: {self.core(i).status()}")

    # ------------------------------------------------------------------ views

    def leader(self) -> int | None:
        found = [
            n.index for n in self.nodes if n.alive and n.core is not None and n.core.role == LEADER
        ]
        if not found:
            return None
        return max(found, key=lambda i: self.core(i).term)

    def heights(self) -> list[int]:
        return [len(n.ledger) for n in self.nodes]

    def sent(self, kind: type[Record], src: int | None = None) -> list[Record]:
        """Every message of ``kind`` handed out so far (by ``src``)."""
        out = []
        for i, ready in self.readies:
            if src is None or i == src:
                out += [m.message for m in ready.messages if isinstance(m.message, kind)]
        return out

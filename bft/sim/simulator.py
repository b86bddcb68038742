"""A deterministic simulator that drives N cores of any protocol in one thread.

Theory of operation
-------------------
Virtual time is an integer number of microseconds; all randomness comes from one
``random.Random(seed)``. Events sit in a heap ordered by (time, sequence number): message
deliveries, client deliveries and replies, the global tick (every ``tick_us``: every live core
ticks, then the clients poll), crashes and restarts. A run replays exactly from its seed.

Each node is driven as the replica runtime drives one: after any input, while the core has a
``Ready``, the simulator makes ``persist`` durable (it appends it to the node's log, which is all
a restart keeps), sends ``messages`` through the network model, appends ``committed`` to the
node's ledger, delivers ``replies`` to the clients, and calls ``advance`` (a ``Ready`` that
replaces the log appends its blocks before the new log, and sends after both). A ``BlockRequest`` is
answered by the simulator from the node's ledger, as a runtime answers it from disk.

A crash discards the core and every undelivered message to it; a restart builds a new core from
exactly the node's durable log and ledger. A crash can also be triggered by a message the node is
about to send (``CrashOnSend``): the node crashes right after that message leaves, before the rest
of its ``Ready``.

Twins are two node instances with one replica identity and one key; a message to that identity
reaches whichever of its instances the network lets through. Honest code, faulty identity:
equivocation emerges without writing Byzantine code.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bft.core.errors import SafetyViolation
from bft.core.interface import CoreContext, LedgerState, ProtocolSpec, serve_block_request
from bft.core.messages import BlockRequest
from bft.core.ready import BROADCAST, Outbound, Reply
from bft.core.requests import Request
from crypto import Committee, SigningKey
from crypto.codec import Record
from crypto.insecure import InsecureFastCommittee, InsecureFastSigner
from ledger import Block, CommitteeSchedule, genesis_hash

from .invariants import (
    Violation,
    check_agreement,
    check_durability,
    check_integrity,
    check_liveness,
    check_validity,
)
from .network import NetworkModel
from .workload import Workload, WorkloadConfig

_DELIVER, _CLIENT, _REPLY, _TICK, _CRASH, _RESTART = range(6)


@dataclass(frozen=True, slots=True)
class CrashAt:
    """Crash node ``node`` at ``at`` microseconds; restart it at ``restart_at`` if given."""

    node: int
    at: int
    restart_at: int | None = None


@dataclass(frozen=True, slots=True)
class CrashOnSend:
    """Crash ``node`` right after it sends a message for which ``when`` is true (once)."""

    node: int
    when: Callable[[Record], bool]
    restart_after: int | None = None


@dataclass
class SimConfig:
    spec: ProtocolSpec
    n: int
    seed: int = 1
    duration: int = 2_000_000
    """Virtual microseconds of the faulty phase."""
    settle: int = 8_000_000
    """At most this long after ``duration`` with faults healed, for liveness to show."""
    tick_us: int = 10_000
    network: NetworkModel = field(default_factory=NetworkModel)
    crashes: list[CrashAt] = field(default_factory=list)
    crash_on_send: list[CrashOnSend] = field(default_factory=list)
    silent: frozenset[int] = frozenset()
    """Replica identities that never send (a Byzantine replica that stays mute)."""
    twins: int = 0
    """The first ``twins`` identities get a second instance (node ids n .. n+twins-1)."""
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    real_crypto: bool = False
    encode_messages: bool = False
    """Send every message through the codec (catches encoding bugs; slower)."""
    core_config: Any = None
    """The protocol's config object, or a callable (identity -> config) per replica."""
    check_liveness: bool = True
    liveness_bound: int = 6_000_000
    chain_id: str = "sim"
    trace_length: int = 80
    initial_ledger: tuple[Block, ...] = ()
    """Blocks every node starts with (a chain that ran before, in another mode, say)."""
    initial_lag: Mapping[int, int] = field(default_factory=dict)
    """Node index -> how many of the last initial blocks that node starts without."""
    earlier_committees: tuple[tuple[int, Committee], ...] = ()
    """``(first height, committee)`` of the modes that wrote ``initial_ledger`` (for S2)."""


@dataclass
class SimNode:
    index: int
    identity: int
    signer: Any
    core: Any = None
    alive: bool = True
    wal: list[Record] = field(default_factory=list)
    ledger: list[Block] = field(default_factory=list)
    crashes: int = 0


@dataclass
class Report:
    seed: int
    protocol: str
    n: int
    violations: list[Violation]
    stats: dict[str, Any]
    trace: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        lines = [
            f"{self.protocol} n={self.n} seed={self.seed}: "
            + ("OK" if self.ok else f"{len(self.violations)} VIOLATION(S)")
        ]
        lines += [f"  {v}" for v in self.violations]
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in self.stats.items()))
        if not self.ok:
            lines.append(f"  replay: seed {self.seed}; the last {len(self.trace)} events:")
            lines += [f"    {t}" for t in self.trace]
        return "\n".join(lines)


def describe_message(message: Record) -> str:
    fields = []
    for name, _ in message.SCHEMA:
        value = getattr(message, name)
        if isinstance(value, bytes):
            fields.append(f"{name}={value.hex()[:8]}")
        elif isinstance(value, int | str):
            fields.append(f"{name}={value}")
        elif isinstance(value, tuple):
            fields.append(f"{name}=[{len(value)}]")
    return f"{type(message).__name__}({', '.join(fields)})"


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.spec = config.spec
        self.rng = random.Random(config.seed)
        n = config.n
        keys = [SigningKey(random.Random(f"{config.seed}/key/{i}").randbytes(32)) for i in range(n)]
        members = [k.public_key for k in keys]
        protocol = config.spec.name
        if config.real_crypto:
            self.committee: Committee = Committee(config.chain_id, members, protocol)
            signers: list[Any] = keys
        else:
            self.committee = InsecureFastCommittee(config.chain_id, members, protocol)
            signers = [InsecureFastSigner(k) for k in members]
        self.nodes = [SimNode(i, i, signers[i]) for i in range(n)]
        for t in range(config.twins):
            self.nodes.append(SimNode(n + t, t, signers[t]))
        for node in self.nodes:
            keep = len(config.initial_ledger) - config.initial_lag.get(node.index, 0)
            node.ledger = list(config.initial_ledger[: max(keep, 0)])
        self.schedule = CommitteeSchedule(
            [*config.earlier_committees, (len(config.initial_ledger) + 1, self.committee)]
            if config.earlier_committees
            else [(1, self.committee)]
        )
        self.instances: dict[int, list[SimNode]] = {}
        for node in self.nodes:
            self.instances.setdefault(node.identity, []).append(node)
        self.faulty = set(range(config.twins)) | set(config.silent)
        self.honest = [i for i in range(n) if i not in self.faulty]
        faults = config.spec.faults(n)
        self.workload = Workload(
            config.workload, self.rng, config.chain_id, faults + 1 if config.spec.byzantine else 1
        )
        # Transactions the earlier run committed count as sent (S4).
        self.workload.sent_raw.update(tx for block in config.initial_ledger for tx in block.txs)
        self.now = 0
        self._events: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self._crash_on_send = list(config.crash_on_send)
        self._started = False
        self.trace: deque[tuple[int, str, Any]] = deque(maxlen=config.trace_length)
        self.stats = {"sent": 0, "delivered": 0, "dropped": 0, "crashes": 0, "restarts": 0}
        self.violations: list[Violation] = []
        for node in self.nodes:
            self._start(node)

    # ---------------------------------------------------------------------------- plumbing

    def _push(self, at: int, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, payload))

    def _core_config(self, identity: int) -> Any:
        cfg = self.config.core_config
        return cfg(identity) if callable(cfg) else cfg

    def _start(self, node: SimNode) -> None:
        ledger = LedgerState.of_blocks(self.config.chain_id, node.ledger)
        context = CoreContext(
            committee=self.committee,
            replica=node.identity,
            signer=node.signer,
            ledger=ledger,
            persisted=tuple(node.wal),
            config=self._core_config(node.identity),
        )
        node.core = self.spec.make(context)
        node.alive = True
        self._drain(node)

    def _note(self, what: str, detail: Any = None) -> None:
        self.trace.append((self.now, what, detail))

    # ---------------------------------------------------------------------------- driving a node

    def _drain(self, node: SimNode) -> None:
        core = node.core
        while node.alive:
            ready = core.ready()
            if ready is None:
                return
            # With ``send_first`` the messages leave before the records are durable: a crash
            # triggered by one of them loses the records.
            if ready.send_first and not self._send_all(node, ready.messages):
                return
            # As the runtime does: a replacing log after the blocks it forgets; otherwise the
            # messages before the blocks, so a crash one of them triggers loses the blocks.
            if ready.persist_replaces:
                for block in ready.committed:
                    self._append(node, block)
                node.wal = list(ready.persist)
            else:
                node.wal.extend(ready.persist)
            if not ready.send_first and not self._send_all(node, ready.messages):
                return
            if not ready.persist_replaces:
                for block in ready.committed:
                    self._append(node, block)
            for reply in ready.replies:
                if node.identity not in self.config.silent:
                    self._push(
                        self.now + self.config.network.delay.sample(self.rng),
                        _REPLY,
                        (node.identity, reply),
                    )
            core.advance(ready)

    def _send_all(self, node: SimNode, messages: Sequence[Outbound]) -> bool:
        """Send ``messages`` in order; False if one of them crashed the node."""
        for out in messages:
            if node.identity in self.config.silent:
                break
            self._send(node, out.to, out.message)
            if self._crash_if_triggered(node, out.message):
                return False
        return True

    def _append(self, node: SimNode, block: Block) -> None:
        ledger = node.ledger
        expected = len(ledger) + 1
        prev = ledger[-1].hash() if ledger else genesis_hash(self.config.chain_id)
        if block.height != expected or block.header.prev_hash != prev:
            self.violations.append(
                Violation(
                    "S2",
                    f"node {node.index} (replica {node.identity}) committed height {block.height} "
                    f"that does not extend its ledger of height {expected - 1}",
                )
            )
            return
        ledger.append(block)
        self._note(f"n{node.index} commits", f"height {block.height} ({len(block.txs)} txs)")

    def _send(self, node: SimNode, to: int, message: Record) -> None:
        self.stats["sent"] += 1
        if self.config.encode_messages:
            message = self.spec.messages.decode(message.encode())
        round_ = self.spec.round_of(message)
        targets = range(self.config.n) if to == BROADCAST else (to,)
        for identity in targets:
            if identity == node.identity:
                continue
            for dst in self.instances.get(identity, ()):
                times = self.config.network.deliveries(
                    self.rng, self.now, node.index, dst.index, round_
                )
                if not times:
                    self.stats["dropped"] += 1
                for at in times:
                    self._push(at, _DELIVER, (dst.index, node.identity, message))

    def _crash_if_triggered(self, node: SimNode, message: Record) -> bool:
        for trigger in self._crash_on_send:
            if trigger.node == node.index and trigger.when(message):
                self._crash_on_send.remove(trigger)
                self._note(f"n{node.index} crashes after sending", describe_message(message))
                self._crash(node)
                if trigger.restart_after is not None:
                    self._push(self.now + trigger.restart_after, _RESTART, node.index)
                return True
        return False

    def _crash(self, node: SimNode) -> None:
        node.alive = False
        node.core = None
        node.crashes += 1
        self.stats["crashes"] += 1

    # ---------------------------------------------------------------------------- the event loop

    def _deliver(self, dst: int, sender: int, message: Record) -> None:
        node = self.nodes[dst]
        if not node.alive:
            return
        self.stats["delivered"] += 1
        self._note(f"n{dst} <- r{sender}", message)
        if isinstance(message, BlockRequest):
            if node.identity in self.config.silent:
                return
            response = serve_block_request(message, len(node.ledger), lambda h: node.ledger[h - 1])
            for peer in self.instances.get(sender, ()):
                for at in self.config.network.deliveries(self.rng, self.now, dst, peer.index, None):
                    self._push(at, _DELIVER, (peer.index, node.identity, response))
            return
        self._guarded(node, lambda: node.core.step(sender, message))

    def _guarded(self, node: SimNode, action: Callable[[], None]) -> None:
        """Feed a core an input and drain it; a core that detects a broken safety invariant stops
        (as a replica would), and the run records the violation."""
        try:
            action()
            self._drain(node)
        except SafetyViolation as exc:
            self.violations.append(Violation("S1", f"node {node.index} stopped: {exc}"))
            self._note(f"n{node.index} stops on a safety violation", str(exc))
            self._crash(node)

    def _tick(self) -> None:
        for node in self.nodes:
            if node.alive:
                self._guarded(node, node.core.tick)
        share = self.config.workload.alone
        for request in self.workload.poll(self.now):
            targets = self.nodes
            alone = (
                share > 0
                and self.workload.submissions[request.id].attempts == 1
                and self.rng.random() < share
            )
            if alone:
                targets = [self.rng.choice(self.nodes)]
                self._note(
                    "client sends alone", f"{request.client!r}#{request.seq} to n{targets[0].index}"
                )
            else:
                self._note("client sends", f"{request.client!r}#{request.seq}")
            for node in targets:
                self._push(
                    self.now + self.config.network.delay.sample(self.rng),
                    _CLIENT,
                    (node.index, request, alone),
                )

    def _handle(self, kind: int, payload: Any) -> None:
        if kind == _DELIVER:
            self._deliver(*payload)
        elif kind == _TICK:
            self._tick()
            self._push(self.now + self.config.tick_us, _TICK, None)
        elif kind == _CLIENT:
            index, request, alone = payload
            node = self.nodes[index]
            if node.alive:
                self._guarded(node, lambda: node.core.propose(request, alone=alone))
        elif kind == _REPLY:
            identity, reply = payload
            self.workload.on_reply(identity, reply, self.now)
        elif kind == _CRASH:
            node = self.nodes[payload]
            if node.alive:
                self._note(f"n{payload} crashes")
                self._crash(node)
        elif kind == _RESTART:
            node = self.nodes[payload]
            if not node.alive:
                self._note(
                    f"n{payload} restarts", f"log of {len(node.wal)}, ledger of {len(node.ledger)}"
                )
                self.stats["restarts"] += 1
                self._start(node)

    def start(self) -> int:
        """Schedule the clock and the configured crashes (once); returns when faults heal."""
        cfg = self.config
        if not self._started:
            self._started = True
            self._push(cfg.tick_us, _TICK, None)
            for crash in cfg.crashes:
                self._push(crash.at, _CRASH, crash.node)
                if crash.restart_at is not None:
                    self._push(crash.restart_at, _RESTART, crash.node)
        healed = cfg.duration
        for crash in cfg.crashes:
            if crash.restart_at is not None:
                healed = max(healed, crash.restart_at)
        return max(healed, cfg.network.heal_at(cfg.duration))

    def run_until(self, end: int, stop: Callable[[], bool] | None = None) -> None:
        """Process events up to virtual time ``end`` (or until ``stop()`` after a tick)."""
        self.start()
        events = self._events
        while events and events[0][0] <= end:
            at, _, kind, payload = heapq.heappop(events)
            self.now = at
            self._handle(kind, payload)
            if stop is not None and kind == _TICK and stop():
                return
        self.now = max(self.now, end)

    def run(self) -> Report:
        """Run the faulty phase, then let the run settle with faults healed; check everything."""
        cfg = self.config
        healed = self.start()
        self.run_until(cfg.duration)
        self.run_until(max(healed, cfg.duration) + cfg.settle, stop=self._settled)
        return self.report(healed)

    def _settled(self) -> bool:
        if not self.workload.done():
            return False
        heights = {len(n.ledger) for n in self.nodes if n.alive and n.identity in self.honest}
        return len(heights) <= 1

    # ---------------------------------------------------------------------------- the verdict

    def honest_ledgers(self) -> dict[int, list[Block]]:
        """The ledger of each honest identity (one instance each)."""
        return {i: self.instances[i][0].ledger for i in self.honest}

    def report(self, healed: int) -> Report:
        cfg = self.config
        ledgers = self.honest_ledgers()
        violations = list(self.violations)
        violations += check_agreement(ledgers)
        for replica, ledger in ledgers.items():
            violations += check_integrity(replica, ledger, self.schedule)
        violations += check_durability(ledgers, self.workload)
        violations += check_validity(ledgers, self.workload, cfg.chain_id, cfg.workload.signed)
        if cfg.check_liveness:
            heights = {
                i: len(self.instances[i][0].ledger)
                for i in self.honest
                if self.instances[i][0].alive
            }
            violations += check_liveness(heights, self.workload, healed, cfg.liveness_bound)
        statuses = [n.core.status() for n in self.nodes if n.alive]
        view_changes = max((s.extra.get("view_changes", 0) for s in statuses), default=0)
        stats = {
            "height": max((len(ledger) for ledger in ledgers.values()), default=0),
            "txs": max((sum(len(b.txs) for b in ledger) for ledger in ledgers.values()), default=0),
            "view_changes": view_changes,
            "max_view": max((s.view for s in statuses), default=0),
            **self.workload.counts(),
            **self.stats,
            "virtual_s": round(self.now / 1e6, 3),
        }
        return Report(cfg.seed, self.spec.name, cfg.n, violations, stats, self._format_trace())

    def _format_trace(self) -> list[str]:
        out = []
        for at, what, detail in self.trace:
            if isinstance(detail, Record):
                detail = describe_message(detail)
            out.append(f"t={at / 1e6:9.6f}s {what}" + (f" {detail}" if detail is not None else ""))
        return out

    # ---------------------------------------------------------------------------- helpers for tests

    def submit(self, request: Request) -> None:
        """Hand ``request`` to every live node now (outside the workload)."""
        for node in self.nodes:
            if node.alive:
                node.core.propose(request)
                self._drain(node)

    def deliver_reply(self, identity: int, reply: Reply) -> None:
        self.workload.on_reply(identity, reply, self.now)


def run(config: SimConfig) -> Report:
    return Simulation(config).run()

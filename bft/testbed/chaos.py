"""A chaos run: load from several clients while a seeded mix of faults hits real replica
processes, then heal, wait, and check the client history against the ledgers.

Theory of operation
-------------------
:func:`run_chaos` makes a cluster (optionally with every replica in its own network namespace,
see :mod:`bft.testbed.netns`), starts the replica processes and then runs three things at once:

* **loaders**: ``clients`` independent client identities, each with ``window`` submissions in
  flight (the first with a window of 1, so its whole history must appear in order). Every
  operation goes into a :class:`~bft.testbed.history.History` with how it ended;
* **the nemesis**: for ``duration`` seconds, one fault *episode* after another, each drawn from
  ``random.Random(seed)``: ``kill`` (kill -9, then restart from its own disk), ``kill-all``,
  ``pause`` (SIGSTOP, then SIGCONT), ``partition`` (two random groups), ``cut`` (one way),
  ``slow`` (delayed links), ``drop`` (random loss) and, in BFT modes, ``byzantine`` (silent,
  equivocating or bad signatures). An episode touches at most f replicas, so the fault budget
  the protocol promises to survive is respected at every moment; it holds for a random time,
  then is reverted, and a random pause follows;
* an :class:`~bft.testbed.history.EventLog` of everything the nemesis did, on the clock of the
  history.

Then every fault is healed (links, Byzantine modes, paused and stopped processes) and the run
checks **liveness**: an operation submitted after the heal must be acknowledged within
``recovery`` seconds. The loaders stop, the replicas must converge on one height, they are
stopped, and the checks run on the files: every ledger verifies and all are identical
(:func:`~bft.testbed.verify.verify_cluster`), and the history holds against the ledger
(:func:`~bft.testbed.history.check_history`). The verdict lists each violation with the events
around it; the run is reproduced by its seed (the schedule of faults is; the timing of a real
cluster is not).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from bft.client import ClientError, NotCommitted, Rejected, open_client
from bft.client.client import Client
from ledger.store import LedgerStore

from . import faults
from .history import CANCELLED, OK, REFUSED, TIMEOUT, EventLog, History, HistoryReport
from .history import check_history as check_history_against
from .layout import init_cluster
from .processes import TestbedError
from .status import fault_tolerance
from .testbed import Testbed
from .verify import VerifyReport, verify_cluster

FAULT_KINDS = ("kill", "kill-all", "pause", "partition", "cut", "slow", "drop", "byzantine")
WEIGHTS = {
    "kill": 3,
    "kill-all": 1,
    "pause": 2,
    "partition": 3,
    "cut": 2,
    "slow": 2,
    "drop": 2,
    "byzantine": 3,
}
BYZANTINE = ("silent", "equivocate", "bad-signatures", "bad-replies")


@dataclass
class ChaosOptions:
    protocol: str
    duration: float = 20.0
    seed: int = 1
    n: int | None = None
    clients: int = 3
    window: int = 4
    """Submissions in flight per client (the first client always uses 1)."""
    kinds: tuple[str, ...] = FAULT_KINDS
    hold: tuple[float, float] = (0.5, 2.5)
    """Seconds a fault episode lasts (uniform)."""
    gap: tuple[float, float] = (0.2, 1.2)
    """Seconds between episodes (uniform)."""
    recovery: float = 40.0
    """Seconds allowed, after the heal, for a new operation to commit."""
    client_timeout: float = 8.0
    tick_ms: float = 10.0
    netns: bool = False


@dataclass
class ChaosResult:
    options: ChaosOptions
    directory: Path
    history: History
    events: EventLog
    report: HistoryReport | None = None
    verify: VerifyReport | None = None
    problems: list[str] = field(default_factory=list)
    """Liveness and cluster problems (not history violations)."""
    episodes: int = 0
    height: int = 0
    resumed_after: float | None = None
    """Seconds from the heal to the first acknowledgement of an operation submitted after it."""

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and self.report is not None
            and self.report.ok
            and self.verify is not None
            and self.verify.ok
            and self.verify.identical
        )

    def verdict_lines(self) -> list[str]:
        """The verdict, then on failure the seed and the events around each violation."""
        counts = self.history.counts()
        opts = self.options
        lines = [
            f"chaos {opts.protocol} seed {opts.seed}: {'PASS' if self.ok else 'FAIL'}",
            f"  {self.episodes} fault episodes in {opts.duration:.0f} s; "
            f"{len(self.history.ops)} operations: {counts.get(OK, 0)} acknowledged, "
            f"{counts.get(REFUSED, 0)} refused, "
            f"{counts.get(TIMEOUT, 0) + counts.get(CANCELLED, 0)} indeterminate",
        ]
        if self.report is not None:
            r = self.report
            lines.append(
                f"  ledger height {self.height}, {r.ledger_transactions} transactions; "
                f"{r.indeterminate_committed} of {r.indeterminate} indeterminate committed; "
                f"{r.ordered_pairs_checked} real-time order checks, "
                f"{r.concurrent_inversions} concurrent reorderings (allowed)"
            )
        if self.resumed_after is not None:
            lines.append(f"  commits resumed {self.resumed_after:.2f} s after the heal")
        for problem in self.problems:
            lines.append(f"  problem: {problem}")
        if self.verify is not None:
            for problem in self.verify.problems:
                lines.append(f"  ledger: {problem}")
            if self.verify.ok and not self.verify.identical:
                lines.append(f"  ledger: not identical, heights {self.verify.heights}")
        if self.report is not None:
            for violation in self.report.violations:
                lines.append(f"  violation [{violation.kind}]: {violation.text}")
                if violation.at is not None:
                    for event in self.events.around(violation.at, violation.until):
                        if event.kind != "client":
                            lines.append(f"      {event.line()}")
        if not self.ok:
            lines.append(
                f"  reproduce: bft testbed chaos --protocol {opts.protocol} "
                f"--duration {opts.duration:g} --seed {opts.seed}"
                + (" --netns" if opts.netns else "")
                + f"  (files in {self.directory})"
            )
        return lines


class Nemesis:
    """Draws and applies fault episodes (see the module's docstring)."""

    def __init__(self, bed: Testbed, options: ChaosOptions, log: EventLog, topology: Any) -> None:
        self.bed = bed
        self.n = bed.n
        self.options = options
        self.log = log
        self.rng = random.Random(options.seed)
        self.f, _ = fault_tolerance(options.protocol, self.n)
        self.bft = options.protocol != "raft"
        self.topology = topology
        kinds = [k for k in options.kinds if self.bft or k != "byzantine"]
        if not kinds:
            raise TestbedError("no fault kinds to draw from")
        self.kinds = kinds
        self.weights = [WEIGHTS[k] for k in kinds]
        self.admin = bed.client_config(admin=True)
        self.episodes = 0

    def _some(self) -> list[int]:
        """One to f distinct replicas."""
        return sorted(self.rng.sample(range(self.n), self.rng.randint(1, max(1, self.f))))

    async def _tell(self, plan: faults.Plan) -> None:
        told = await faults.apply(self.admin, plan, timeout=4.0)
        missed = [t.replica for t in told if not t.ok]
        if missed:
            self.log.add("nemesis", f"  (not told: replicas {missed})")

    async def _kill(self, replicas: list[int]) -> None:
        for r in replicas:
            if self.bed.processes.pid(r) is not None:
                await trio.to_thread.run_sync(self.bed.processes.kill, r)

    def _start(self, replicas: list[int]) -> None:
        for r in replicas:
            if self.bed.processes.pid(r) is None:
                self.bed.processes.start(r)

    async def run(self, duration: float) -> None:
        deadline = trio.current_time() + duration
        while trio.current_time() < deadline:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            hold = self.rng.uniform(*self.options.hold)
            gap = self.rng.uniform(*self.options.gap)
            self.episodes += 1
            await self.episode(kind, hold)
            await trio.sleep(min(gap, max(0.0, deadline - trio.current_time())))

    async def episode(self, kind: str, hold: float) -> None:
        rng, n, log = self.rng, self.n, self.log
        if kind in ("kill", "kill-all"):
            targets = list(range(n)) if kind == "kill-all" else self._some()
            log.add("nemesis", f"kill -9 replicas {targets}")
            await self._kill(targets)
            await trio.sleep(hold)
            self._start(targets)
            log.add("nemesis", f"restart replicas {targets}")
        elif kind == "pause":
            targets = self._some()
            log.add("nemesis", f"SIGSTOP replicas {targets}")
            for r in targets:
                if self.bed.processes.pid(r) is not None:
                    self.bed.processes.pause(r)
            await trio.sleep(hold)
            for r in targets:
                if self.bed.processes.pid(r) is not None:
                    self.bed.processes.resume(r)
            log.add("nemesis", f"SIGCONT replicas {targets}")
        elif kind == "partition":
            members = list(range(n))
            rng.shuffle(members)
            cut = rng.randint(1, n - 1)
            groups = [sorted(members[:cut]), sorted(members[cut:])]
            log.add("nemesis", f"partition {groups[0]} / {groups[1]}")
            if self.topology is not None:
                self.topology.partition(groups)
            else:
                await self._tell(faults.plan_partition(groups, n))
            await trio.sleep(hold)
            await self.heal_links()
        elif kind == "cut":
            sender, receiver = rng.sample(range(n), 2)
            log.add("nemesis", f"cut {sender} -> {receiver} (one way)")
            if self.topology is not None:
                self.topology.cut_one_way(sender, receiver)
            else:
                await self._tell(faults.plan_cut(sender, receiver, n))
            await trio.sleep(hold)
            await self.heal_links()
        elif kind == "slow":
            r = rng.randrange(n)
            delay = rng.uniform(0.02, 0.3)
            if self.topology is not None:
                log.add("nemesis", f"slow replica {r} (shaped links)")
                self.topology.slow(r)
            else:
                log.add("nemesis", f"slow replica {r} by {delay * 1000:.0f} ms")
                await self._tell(faults.plan_link("slow", r, n, delay))
            await trio.sleep(hold)
            await self.heal_links()
        elif kind == "drop":
            r = rng.randrange(n)
            p = rng.uniform(0.05, 0.5)
            log.add("nemesis", f"drop {p:.0%} of replica {r}'s messages")
            await self._tell(faults.plan_link("drop", r, n, p))
            await trio.sleep(hold)
            await self.heal_links()
        elif kind == "byzantine":
            targets = self._some()
            modes = {r: rng.choice(BYZANTINE) for r in targets}
            log.add("nemesis", "byzantine " + ", ".join(f"{r}={m}" for r, m in modes.items()))
            for r, mode in modes.items():
                await self._tell(faults.plan_byzantine(r, mode, n))
            await trio.sleep(hold)
            for r in targets:
                await self._tell(faults.plan_byzantine(r, "honest", n))
            log.add("nemesis", f"honest again: replicas {targets}")
        else:
            raise TestbedError(f"unknown fault kind {kind!r}")

    async def heal_links(self) -> None:
        if self.topology is not None:
            self.topology.heal()
        await self._tell(faults.plan_heal(self.n))
        self.log.add("nemesis", "heal links")

    async def heal_all(self) -> None:
        """Every process running and continued, every link healed, every replica honest."""
        for r in range(self.n):
            if self.bed.processes.state(r).state == "paused":
                self.bed.processes.resume(r)
        self._start(list(range(self.n)))
        await self.bed.wait_ready(timeout=60)
        await self.heal_links()
        if self.bft:
            for r in range(self.n):
                await self._tell(faults.plan_byzantine(r, "honest", self.n))
        self.log.add("nemesis", "healed: every replica running, honest, fully linked")


async def record_load(
    client: Client,
    name: str,
    window: int,
    history: History,
    log: EventLog,
    stop: trio.Event,
) -> None:
    """Submit through ``client`` with ``window`` in flight until ``stop``, recording every
    operation in ``history`` under the name ``name``."""
    history.add_client(name, client.client_id)
    counter = 0

    async def one(index: int) -> None:
        payload = b"chaos %s %d" % (name.encode(), index)
        op = history.begin(name, index, payload, log.now(), client.client_id)
        try:
            receipt = await client.submit(payload)
        except Rejected as exc:
            op.outcome, op.detail = REFUSED, exc.reason[:120]
        except NotCommitted:
            op.outcome = TIMEOUT
        except ClientError as exc:
            op.outcome, op.detail = TIMEOUT, f"{type(exc).__name__}: {exc}"[:120]
        except trio.Cancelled:
            op.outcome = CANCELLED
            raise
        else:
            op.outcome = OK
            op.seq = receipt.transaction().seq
            op.place = (receipt.height, receipt.index)
            op.block_hash = receipt.header.hash()
            op.raw = receipt.tx
        finally:
            op.finished = log.now()

    async def worker() -> None:
        nonlocal counter
        while not stop.is_set():
            index = counter
            counter += 1
            await one(index)

    async with trio.open_nursery() as nursery:
        for _ in range(window):
            nursery.start_soon(worker)


def _read_blocks(bed: Testbed, replica: int) -> list[Any]:
    path = bed.cluster.data_dir(replica) / "ledger"
    if not path.exists():
        return []
    with LedgerStore.open(path, chain_id=bed.cluster.chain_id, readonly=True) as store:
        return list(store.blocks(1, store.height)) if store.height else []


async def run_chaos(
    options: ChaosOptions,
    directory: Path | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> ChaosResult:
    """Run the chaos test described in the module's docstring; return its result."""
    if options.duration <= 0:
        raise TestbedError("the duration must be positive")
    if options.clients < 1 or options.window < 1:
        raise TestbedError("give at least one client and a window of at least 1")
    unknown = set(options.kinds) - set(FAULT_KINDS)
    if unknown:
        raise TestbedError(
            f"unknown fault kinds {sorted(unknown)}; choose from {', '.join(FAULT_KINDS)}"
        )
    n = options.n or (3 if options.protocol == "raft" else 4)
    directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp("-chaos"))
    topology = None
    if options.netns:
        from . import netns

        why = netns.unavailable()
        if why is not None:
            raise TestbedError(f"--netns: {why}")
        topology = netns.NetnsTopology(n)
        topology.create()
    try:
        init_cluster(
            directory / "cluster",
            protocol=options.protocol,
            n=n,
            tick_ms=options.tick_ms,
            addresses=topology.addresses() if topology is not None else None,
        )
        bed = Testbed(directory / "cluster")
        if topology is not None:
            bed.processes.launcher = topology.launcher
        with open(directory / "events.jsonl", "w", encoding="utf-8") as sink:
            log = EventLog(sink=sink)
            result = ChaosResult(options, directory, History(), log)
            try:
                await _run(bed, options, result, topology, progress)
            finally:
                await trio.to_thread.run_sync(bed.stop)
            result.history.write(directory / "history.jsonl")
        if result.problems and result.report is None:
            return result
        result.verify = verify_cluster(bed.cluster)
        blocks = _read_blocks(bed, max(range(n), key=lambda i: result.verify.heights[i]))  # type: ignore[union-attr]
        result.height = len(blocks)
        result.report = check_history_against(result.history, blocks, chain_id=bed.cluster.chain_id)
        return result
    finally:
        if topology is not None:
            topology.destroy()


async def _run(
    bed: Testbed,
    options: ChaosOptions,
    result: ChaosResult,
    topology: Any,
    progress: Callable[[str], None] | None,
) -> None:
    log, history = result.events, result.history
    say = progress or (lambda _text: None)
    bed.start()
    await bed.wait_ready(timeout=60)
    log.add("run", f"{bed.n} {options.protocol} replicas ready")
    nemesis = Nemesis(bed, options, log, topology)
    stop = trio.Event()
    config = bed.client_config(timeout=options.client_timeout)
    async with trio.open_nursery() as loaders:
        for c in range(options.clients):
            client = await loaders.start(_open_client, config)
            window = 1 if c == 0 else options.window
            loaders.start_soon(record_load, client, f"c{c}", window, history, log, stop)
        say(f"load running; faults for {options.duration:g} s (seed {options.seed})")
        await nemesis.run(options.duration)
        result.episodes = nemesis.episodes
        say(f"{nemesis.episodes} fault episodes done; healing")
        await nemesis.heal_all()
        healed = log.now()

        def resumed() -> float | None:
            acks = [
                op.finished
                for op in history.ops
                if op.outcome == OK and op.submitted >= healed and op.finished is not None
            ]
            return min(acks) - healed if acks else None

        with trio.move_on_after(options.recovery):
            while resumed() is None:
                await trio.sleep(0.1)
        result.resumed_after = resumed()
        if result.resumed_after is None:
            result.problems.append(
                f"liveness: no operation submitted after the heal committed within "
                f"{options.recovery:g} s"
            )
        else:
            await trio.sleep(1.0)  # a little more load on the healed cluster
        stop.set()
        log.add("run", "load stopping")
        with trio.move_on_after(options.client_timeout + 2):
            while any(op.outcome == "pending" for op in history.ops):
                await trio.sleep(0.1)
        loaders.cancel_scope.cancel()
    try:
        height = await bed.wait_converged(timeout=60, settle=1.0)
        log.add("run", f"converged at height {height}")
    except TestbedError as exc:
        result.problems.append(f"convergence: {exc}")


async def _open_client(config: Any, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Hold a client open for the loaders (the nursery's cancellation closes it)."""
    async with open_client(config) as client:
        task_status.started(client)
        await trio.sleep_forever()


def remove_run(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)

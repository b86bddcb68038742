"""The five Raft properties (Figure 3 of the paper), checked after every step.

The checker looks at every live core (its term, vote, role, log and commit index) and at every
node's ledger, and keeps what it has seen in global maps, so a property that spans time (a leader
that drops an entry, a committed entry missing from a later leader, a vote forgotten across a
restart) is caught at the step where it breaks:

* **Election safety** - at most one leader per term (``term -> leader``).
* **Leader append-only** - a leader never overwrites or deletes entries of its log: the last
  entry seen while it led in a term is still there at every later step of that term.
* **Log matching** - two logs with an entry of the same index and term are identical up to it:
  every log is checked to be a hash chain (each entry links to its predecessor's block hash,
  indices are contiguous, terms never decrease), and ``(index, term) -> block hash`` is global.
* **Leader completeness** - an entry committed in a term is in the log of every leader of every
  later term (checked at the highest index committed before the leader's term; the hash chain
  covers everything below it).
* **State machine safety** - no two replicas apply different entries at one index: every ledger
  block agrees with one global chain of committed hashes.

Also: a replica's term never goes back and its vote in a term never changes (both must survive a
restart), nothing is applied beyond the commit index, and no request is applied twice.

Work per step is proportional to what changed (identity comparison of entry lists), so the check
can run after every event of a simulation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bft.raft import LEADER, RaftCore
from bft.sim import SimConfig, Simulation
from ledger import Block, genesis_hash


class PropertyViolation(AssertionError):
    pass


class RaftChecker:
    def __init__(self, chain_id: str, seed: object = None) -> None:
        self.chain_id = chain_id
        self.seed = seed
        self.genesis = genesis_hash(chain_id)
        self.leaders: dict[int, int] = {}
        self.entries: dict[tuple[int, int], bytes] = {}
        self.votes: dict[tuple[int, int], int] = {}
        self.terms: dict[int, int] = {}
        self.led: dict[tuple[int, int], tuple[int, bytes]] = {}
        self.committed: dict[int, bytes] = {}
        self.committed_max = 0
        self.commit_by_term: dict[int, int] = {}
        self.commit_version = 0
        self.ledger_checked: dict[int, int] = {}
        self.seen_logs: dict[int, tuple[int, list[Any]]] = {}
        self.hashes: dict[int, tuple[Any, bytes]] = {}
        self.steps = 0

    def fail(self, what: str) -> None:
        raise PropertyViolation(f"seed {self.seed!r}, step {self.steps}: {what}")

    # ------------------------------------------------------------------ entry points

    def check_nodes(self, nodes: Iterable[Any], everyone: Iterable[Any] = ()) -> None:
        """Check ``nodes`` (the ones a step changed): objects with ``index``, ``alive``,
        ``core`` and ``ledger`` (the simulator's ``SimNode`` or the test harness's nodes).
        When the step committed something new, every live leader among ``everyone`` is checked
        for leader completeness too, though the step did not change it."""
        self.steps += 1
        version = self.commit_version
        checked = set()
        for node in nodes:
            checked.add(node.index)
            self.check_ledger(node.index, node.ledger)
            if node.alive and node.core is not None:
                self.check_core(node.index, node.core, node.ledger)
        if self.commit_version != version:
            for node in everyone:
                core = node.core
                fresh = node.index not in checked and node.alive and core is not None
                if fresh and core.role == LEADER:
                    self.check_leader(core, node.ledger)

    # ------------------------------------------------------------------ one replica

    def check_core(self, key: int, core: RaftCore, ledger: Sequence[Block]) -> None:
        replica, term = core.replica, core.term
        if term < self.terms.get(replica, 0):
            self.fail(f"replica {replica}'s term went back from {self.terms[replica]} to {term}")
        self.terms[replica] = term
        if core.voted_for is not None:
            vote = self.votes.setdefault((replica, term), core.voted_for)
            if vote != core.voted_for:
                self.fail(
                    f"replica {replica} voted for {vote} and then {core.voted_for} in term {term}"
                )
        if core.duplicates:
            self.fail(f"replica {replica} applied a request twice")
        if core.applied > core.commit:
            self.fail(f"replica {replica} applied {core.applied} beyond its commit {core.commit}")
        if core.applied != len(ledger):
            self.fail(
                f"replica {replica} applied {core.applied} but its ledger holds {len(ledger)}"
            )
        self.check_log(key, core, ledger)
        if core.role == LEADER:
            self.check_leader(core, ledger)
        self.check_commit(core, ledger)

    def check_log(self, key: int, core: RaftCore, ledger: Sequence[Block]) -> None:
        log = core.log
        entries = log.entries
        seen = self.seen_logs.get(key)
        start = 0
        if seen is not None:
            old_base, old = seen
            if old_base == log.base_index and len(old) <= len(entries):
                if old == entries[: len(old)]:
                    start = len(old)
            elif old_base < log.base_index:
                shift = log.base_index - old_base
                overlap = min(len(old) - shift, len(entries))
                if overlap > 0 and old[shift : shift + overlap] == entries[:overlap]:
                    start = overlap
        if start == 0:
            base = log.base_index
            expected = self.genesis if base == 0 else self.block_hash_at(base, ledger)
            if expected is not None and expected != log.base_hash:
                self.fail(f"replica {core.replica}'s log base {base} is not its ledger's block")
        prev_hash = log.base_hash if start == 0 else entries[start - 1].hash
        prev_term = log.base_term if start == 0 else entries[start - 1].term
        for k in range(start, len(entries)):
            item = entries[k]
            index = log.base_index + 1 + k
            header = item.entry.header
            if header.height != index:
                self.fail(
                    f"replica {core.replica}'s entry at {index} claims height {header.height}"
                )
            if header.prev_hash != prev_hash:
                self.fail(f"replica {core.replica}'s log is not a hash chain at {index}")
            if header.view < prev_term:
                self.fail(f"replica {core.replica}'s log goes back in term at {index}")
            cached = self.hashes.get(id(item))
            if cached is None or cached[0] is not item:
                if header.hash() != item.hash:
                    self.fail(f"replica {core.replica}'s entry {index} has a wrong cached hash")
                self.hashes[id(item)] = (item, item.hash)
            known = self.entries.setdefault((index, header.view), item.hash)
            if known != item.hash:
                self.fail(
                    f"log matching: two different entries at index {index}, term {header.view}"
                )
            prev_hash, prev_term = item.hash, header.view
        self.seen_logs[key] = (log.base_index, list(entries))

    def block_hash_at(self, height: int, ledger: Sequence[Block]) -> bytes | None:
        if height == 0:
            return self.genesis
        if height <= len(ledger):
            return ledger[height - 1].hash()
        return None

    def hash_in(self, core: RaftCore, ledger: Sequence[Block], index: int) -> bytes | None:
        found = core.log.hash_at(index)
        if found is None and index <= core.log.base_index:
            found = self.block_hash_at(index, ledger)
        return found

    def check_leader(self, core: RaftCore, ledger: Sequence[Block]) -> None:
        term = core.term
        leader = self.leaders.setdefault(term, core.replica)
        if leader != core.replica:
            self.fail(f"election safety: replicas {leader} and {core.replica} lead term {term}")
        key = (core.replica, term)
        before = self.led.get(key)
        if before is not None:
            index, block_hash = before
            if self.hash_in(core, ledger, index) != block_hash:
                self.fail(f"leader append-only: leader {core.replica} of term {term} lost {index}")
        self.led[key] = (core.log.last_index, core.log.last_hash)
        earlier = [i for t, i in self.commit_by_term.items() if t < term]
        if earlier:
            index = max(earlier)
            if self.hash_in(core, ledger, index) != self.committed[index]:
                self.fail(
                    f"leader completeness: leader {core.replica} of term {term} lacks entry "
                    f"{index}, committed before its term"
                )

    def check_commit(self, core: RaftCore, ledger: Sequence[Block]) -> None:
        commit = core.commit
        if commit == 0:
            return
        if commit <= self.committed_max:
            if self.hash_in(core, ledger, commit) != self.committed[commit]:
                self.fail(f"replica {core.replica} committed another entry at {commit}")
        else:
            low = self.committed_max
            if low and self.hash_in(core, ledger, low) != self.committed[low]:
                self.fail(f"replica {core.replica} committed a chain that forks below {low}")
            for index in range(low + 1, commit + 1):
                found = self.hash_in(core, ledger, index)
                if found is None:
                    self.fail(f"replica {core.replica} committed {index} that it does not hold")
                self.committed[index] = found  # type: ignore[assignment]
            self.committed_max = commit
        if commit > self.commit_by_term.get(core.term, 0):
            self.commit_by_term[core.term] = commit
            self.commit_version += 1

    def check_ledger(self, key: int, ledger: Sequence[Block]) -> None:
        done = self.ledger_checked.get(key, 0)
        if len(ledger) < done:
            self.fail(f"node {key}'s ledger shrank")
        for height in range(done + 1, len(ledger) + 1):
            block_hash = ledger[height - 1].hash()
            known = self.committed.get(height)
            if known is None:
                if height <= self.committed_max:
                    self.fail(f"hole in the committed chain at {height}")
                # applied from a fetched block the checker has not seen committed yet
                self.committed[height] = block_hash
                self.committed_max = max(self.committed_max, height)
            elif known != block_hash:
                self.fail(f"state machine safety: node {key} applied another block at {height}")
        self.ledger_checked[key] = len(ledger)


class CheckedSimulation(Simulation):
    """The simulator with the Raft properties checked after every event."""

    def __init__(self, config: SimConfig) -> None:
        self.checker = RaftChecker(config.chain_id, config.seed)
        self._touched: set[int] = set()
        super().__init__(config)

    def _drain(self, node: Any) -> None:
        super()._drain(node)
        self._touched.add(node.index)  # every input to a core is followed by a drain

    def _handle(self, kind: int, payload: Any) -> None:
        super()._handle(kind, payload)
        touched = [self.nodes[i] for i in sorted(self._touched)]
        self._touched.clear()
        self.checker.check_nodes(touched, self.nodes)

    def finish(self, healed: int) -> Any:
        """Heal, let it settle as ``run`` does, and report."""
        self.run_until(max(healed, self.now) + self.config.settle, stop=self._settled)
        return self.report(healed)

    def leader(self) -> int | None:
        best = None
        for node in self.nodes:
            if not node.alive or node.core.role != LEADER:
                continue
            if best is None or node.core.term > self.nodes[best].core.term:
                best = node.index
        return best


def check_run(config: SimConfig) -> Any:
    """Run ``config`` with the properties checked at every step; return the report."""
    return CheckedSimulation(config).run()

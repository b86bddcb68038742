"""The in-memory Raft log: the entries above a base, each with its block hash.

The base is the last entry no longer held in memory: the ledger tip the replica started from, a
block it fetched, or the last entry compacted away. Its index, term and block hash are kept, so
that an AppendEntries right above it can still be checked. Every entry links to the one before it
by block hash (``header.prev_hash``), so the log is a hash chain from the ledger's genesis: two
logs that hold the same block hash at some index hold the same entries up to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bft.core.errors import SafetyViolation
from bft.core.requests import Request
from ledger import Block

from .messages import Entry


def term_of_block(block: Block) -> int:
    """The Raft term a ledger block stands for: its view if Raft wrote it, else 0 (a block of
    another mode, below every Raft term of this deployment)."""
    return block.header.view if block.header.protocol == "raft" else 0


@dataclass(slots=True, eq=False)
class LogEntry:
    """An entry with what is computed once: its block hash, its decoded requests (until it is
    applied) and the bytes of its transactions."""

    entry: Entry
    hash: bytes
    requests: tuple[Request, ...]
    size: int = -1

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = sum(len(t) for t in self.entry.txs)

    @property
    def index(self) -> int:
        return self.entry.header.height

    @property
    def term(self) -> int:
        return self.entry.header.view

    @classmethod
    def of(cls, entry: Entry, requests: Sequence[Request] | None = None) -> LogEntry:
        if requests is None:
            requests = [Request.from_raw(raw) for raw in entry.txs]
        return cls(entry, entry.header.hash(), tuple(requests))


class RaftLog:
    __slots__ = ("base_hash", "base_index", "base_term", "entries", "held_bytes")

    def __init__(self, base_index: int, base_term: int, base_hash: bytes) -> None:
        self.base_index = base_index
        self.base_term = base_term
        self.base_hash = base_hash
        self.entries: list[LogEntry] = []
        self.held_bytes = 0
        """Transaction bytes of the entries held."""

    @property
    def last_index(self) -> int:
        return self.base_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.base_term

    @property
    def last_hash(self) -> bytes:
        return self.entries[-1].hash if self.entries else self.base_hash

    def get(self, index: int) -> LogEntry | None:
        offset = index - self.base_index - 1
        if 0 <= offset < len(self.entries):
            return self.entries[offset]
        return None

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; ``None`` when it is not known here."""
        if index == self.base_index:
            return self.base_term
        entry = self.get(index)
        return entry.term if entry is not None else None

    def hash_at(self, index: int) -> bytes | None:
        if index == self.base_index:
            return self.base_hash
        entry = self.get(index)
        return entry.hash if entry is not None else None

    def append(self, entry: LogEntry) -> None:
        if entry.index != self.last_index + 1 or entry.entry.header.prev_hash != self.last_hash:
            raise SafetyViolation(f"entry {entry.index} does not extend the log")
        if entry.term < self.last_term:
            raise SafetyViolation(f"entry {entry.index} has a term below its predecessor's")
        self.entries.append(entry)
        self.held_bytes += entry.size

    def truncate_from(self, index: int) -> list[LogEntry]:
        """Drop the entries at ``index`` and above; return them."""
        offset = max(0, index - self.base_index - 1)
        removed = self.entries[offset:]
        del self.entries[offset:]
        self.held_bytes -= sum(e.size for e in removed)
        return removed

    def compact_to(self, index: int) -> None:
        """Forget the entries up to ``index`` (they are in the durable ledger)."""
        if index <= self.base_index:
            return
        last = self.get(index)
        if last is None:
            raise SafetyViolation(f"cannot compact to {index}, beyond the log")
        cut = index - self.base_index
        self.held_bytes -= sum(e.size for e in self.entries[:cut])
        del self.entries[:cut]
        self.base_index, self.base_term, self.base_hash = index, last.term, last.hash

    def reset(self, base_index: int, base_term: int, base_hash: bytes) -> list[LogEntry]:
        """Start over above a new base (a block fetched from the ledger); return the dropped."""
        removed = self.entries
        self.entries = []
        self.held_bytes = 0
        self.base_index, self.base_term, self.base_hash = base_index, base_term, base_hash
        return removed

    def slice(self, start: int, max_count: int, max_bytes: int) -> list[LogEntry]:
        """Entries from ``start`` (above the base), at most ``max_count`` and about
        ``max_bytes`` of transactions (always at least one if there is one)."""
        out: list[LogEntry] = []
        size = 0
        offset = start - self.base_index - 1
        if offset < 0:
            return out
        for entry in self.entries[offset : offset + max_count]:
            weight = entry.size
            if out and size + weight > max_bytes:
                break
            out.append(entry)
            size += weight
        return out

    def retained_upto(self, upto: int, max_bytes: int) -> int:
        """The index to compact to so that the entries up to ``upto`` hold at most
        ``max_bytes`` of transactions (at least the base: nothing is forgotten above ``upto``)."""
        held = self.held_bytes - sum(e.size for e in self.entries[max(0, upto - self.base_index) :])
        index = self.base_index
        for entry in self.entries:
            if held <= max_bytes or entry.index > upto:
                break
            held -= entry.size
            index = entry.index
        return index

    def first_index_of_term(self, term: int, index: int, floor: int) -> int:
        """The first index at or below ``index`` (and above ``floor``) in the run of entries of
        ``term`` that ``index`` belongs to."""
        low = max(floor, self.base_index)
        while index - 1 > low and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int, upto: int) -> int | None:
        """The last index at or below ``upto`` holding an entry of ``term`` (``None``: none)."""
        index = min(upto, self.last_index)
        while index > self.base_index:
            t = self.term_at(index)
            if t is None or t < term:
                return None
            if t == term:
                return index
            index -= 1
        return None

"""What a Raft replica makes durable before it sends, and how it reads it back.

Raft's persistent state (Figure 2 of the paper) is the current term, the vote cast in it, and the
log. Here the log's committed prefix lives in the ledger (the driver appends committed blocks
durably), so the protocol log holds:

* :class:`~bft.raft.messages.TermRecord` - written whenever the term or the vote changes, in the
  same ``Ready`` as (hence durable before) the vote or message that depends on it;
* :class:`~bft.raft.messages.Entry` - every entry appended, durable before the replica
  acknowledges it. An entry at index ``i`` replaces every entry at ``i`` or above written before
  it (a follower truncating a conflicting suffix), as in etcd's write-ahead log.

From time to time the replica replaces the whole log by a snapshot: its term and vote, and the
entries above the part of the ledger that is already durable.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

from bft.core.errors import LocalMisuse
from crypto.codec import Record

from .messages import Entry, TermRecord


@dataclass
class Durable:
    """The durable state read back from a replica's protocol log."""

    term: int = 0
    voted_for: int | None = None
    entries: list[Entry] = field(default_factory=list)
    """In index order, the last write at each index winning. There may be gaps: after a block
    fetch the log continues above the fetched blocks, which are in the ledger instead."""

    @classmethod
    def load(cls, records: Iterable[Record]) -> Durable:
        state = cls()
        for rec in records:
            if isinstance(rec, TermRecord):
                if rec.term >= state.term:
                    state.term = rec.term
                    state.voted_for = rec.voted_for
            elif isinstance(rec, Entry):
                state.put(rec)
            else:
                raise LocalMisuse(
                    f"the protocol log holds a {type(rec).__name__}, which is not Raft's: "
                    "start a replica that switched mode with an empty protocol log"
                )
        return state

    def put(self, entry: Entry) -> None:
        """An entry at index ``i`` replaces every entry at ``i`` or above."""
        cut = bisect_left(self.entries, entry.index, key=lambda e: e.index)
        del self.entries[cut:]
        self.entries.append(entry)

    def entries_above(self, height: int) -> list[Entry]:
        return [e for e in self.entries if e.index > height]

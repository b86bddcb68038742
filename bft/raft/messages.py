"""Raft's messages and log records (record tags 0x70-0x8f).

A log :class:`Entry` *is* a ledger block in the making: the header the leader built when it
appended the entry (height = log index, ``view`` = term, ``proposer`` = leader, ``prev_hash`` =
the previous entry's block hash) and the transactions. The entry's term and index are read from
its header, so they cannot disagree with the block it becomes. Once the entry commits, it gains a
certificate naming the majority that stored it, and goes to the ledger unchanged.

Nothing here is signed: Raft trusts its replicas not to lie (crash faults only). Each message
still carries its sender's term, which is how stale leaders and candidates are recognised.
"""

from __future__ import annotations

from crypto import MAX_COMMITTEE
from crypto.codec import Bool, Bytes, CodecError, Nested, Optional, Record, Seq, UInt, record, wire
from crypto.qc import bitmap_size
from ledger import MAX_BLOCK_TXS, MAX_TX_SIZE, BlockHeader

MAX_ENTRIES_PER_MESSAGE = 256
MAX_ACKS_PER_MESSAGE = 1024
ACK_BITMAP = Bytes(min_size=1, max_size=bitmap_size(MAX_COMMITTEE))


@record(tag=0x70)
class Entry(Record):
    """One log entry: the ledger header the leader built for it, and its transactions."""

    header: BlockHeader = wire(Nested(BlockHeader))
    txs: tuple[bytes, ...] = wire(
        Seq(Bytes(min_size=1, max_size=MAX_TX_SIZE), max_len=MAX_BLOCK_TXS)
    )

    def _check(self) -> None:
        if self.header.protocol != "raft":
            raise CodecError("a Raft entry's header must say protocol 'raft'", "Entry.header")
        if len(self.txs) != self.header.tx_count:
            raise CodecError(
                f"header says {self.header.tx_count} transactions, entry has {len(self.txs)}",
                "Entry.txs",
            )

    @property
    def index(self) -> int:
        return self.header.height

    @property
    def term(self) -> int:
        return self.header.view


@record(tag=0x71)
class TermRecord(Record):
    """Durable: the current term and the vote cast in it (``None``: no vote yet)."""

    term: int = wire(UInt())
    voted_for: int | None = wire(Optional(UInt(MAX_COMMITTEE - 1)))


@record(tag=0x72)
class AppendEntries(Record):
    """The leader's entries after ``(prev_index, prev_term)``, its commit index, and the
    acknowledgement bitmaps of committed entries ``acks_from, acks_from + 1, ...`` (the
    certificates the follower needs to turn them into ledger blocks)."""

    term: int = wire(UInt())
    prev_index: int = wire(UInt())
    prev_term: int = wire(UInt())
    entries: tuple[Entry, ...] = wire(Seq(Nested(Entry), max_len=MAX_ENTRIES_PER_MESSAGE))
    commit: int = wire(UInt())
    acks_from: int = wire(UInt(minimum=1))
    acks: tuple[bytes, ...] = wire(Seq(ACK_BITMAP, max_len=MAX_ACKS_PER_MESSAGE))


@record(tag=0x73)
class AppendReply(Record):
    """On success, ``index`` is the last index known to match the leader's log. On failure,
    ``index`` is the rejected ``prev_index`` and the hints say where to retry: the follower's
    term at ``prev_index`` (``hint_term``, 0 if it has no entry there) and the first index it
    holds of that term (or its last index plus one). ``applied`` is the follower's ledger
    height."""

    term: int = wire(UInt())
    success: bool = wire(Bool())
    index: int = wire(UInt())
    hint_index: int = wire(UInt())
    hint_term: int = wire(UInt())
    applied: int = wire(UInt())


@record(tag=0x74)
class Heartbeat(Record):
    """The leader is alive. ``commit`` is at most what the follower is known to hold."""

    term: int = wire(UInt())
    commit: int = wire(UInt())
    acks_from: int = wire(UInt(minimum=1))
    acks: tuple[bytes, ...] = wire(Seq(ACK_BITMAP, max_len=MAX_ACKS_PER_MESSAGE))


@record(tag=0x75)
class HeartbeatReply(Record):
    term: int = wire(UInt())
    applied: int = wire(UInt())


@record(tag=0x76)
class RequestVote(Record):
    """A (pre-)candidate asks for a vote in ``term``. A pre-vote (``pre``) asks whether the
    receiver *would* vote, for the term the sender would move to, and changes nobody's term.
    ``transfer`` marks an election the leader asked for (leadership transfer), which the
    receivers' leader lease does not hold back."""

    term: int = wire(UInt())
    last_index: int = wire(UInt())
    last_term: int = wire(UInt())
    pre: bool = wire(Bool())
    transfer: bool = wire(Bool())


@record(tag=0x77)
class VoteReply(Record):
    term: int = wire(UInt())
    granted: bool = wire(Bool())
    pre: bool = wire(Bool())


@record(tag=0x78)
class TimeoutNow(Record):
    """The leader hands over: start an election now, skipping the pre-vote."""

    term: int = wire(UInt())


@record(tag=0x79)
class CatchUp(Record):
    """The leader no longer holds the entries the follower lacks: fetch the certified blocks up
    to ``height`` from the leader's ledger (shared ``BlockRequest``)."""

    term: int = wire(UInt())
    height: int = wire(UInt())


MESSAGES: tuple[type[Record], ...] = (
    AppendEntries,
    AppendReply,
    Heartbeat,
    HeartbeatReply,
    RequestVote,
    VoteReply,
    TimeoutNow,
    CatchUp,
)
"""What replicas send each other (``Entry`` and ``TermRecord`` travel inside them or stay on
disk)."""

RECORDS: tuple[type[Record], ...] = (Entry, TermRecord)
"""What a replica persists."""

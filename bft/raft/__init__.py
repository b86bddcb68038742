"""Raft (Ongaro & Ousterhout) for trusted deployments: elections with pre-vote and
check-quorum, pipelined and batched log replication with fast backtracking, commitment by a
majority of the current term, leadership transfer, and log entries that are ledger blocks in the
making, certified by the majority that stored them. A pure, sans-I/O core.

Tolerates crashes, not lies: n = 2f+1 replicas survive f crashes. See ``docs/raft.md`` for what
a Raft ledger proves and how a chain switches between Raft and a BFT mode.
"""

from __future__ import annotations

from bft.core.interface import CoreContext, ProtocolSpec, message_union
from crypto.codec import Record, RecordUnion

from .config import RaftConfig
from .core import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, RaftCore
from .errors import NotLeader
from .log import LogEntry, RaftLog, term_of_block
from .messages import (
    MESSAGES,
    RECORDS,
    AppendEntries,
    AppendReply,
    CatchUp,
    Entry,
    Heartbeat,
    HeartbeatReply,
    RequestVote,
    TermRecord,
    TimeoutNow,
    VoteReply,
)
from .state import Durable


def round_of(message: Record) -> int | None:
    """The term a message belongs to (for per-round partitions); ``None`` for block fetches."""
    term = getattr(message, "term", None)
    return term if isinstance(term, int) else None


def make(context: CoreContext) -> RaftCore:
    return RaftCore(context)


SPEC = ProtocolSpec(
    name="raft",
    make=make,
    messages=message_union(*MESSAGES),
    byzantine=False,
    round_of=round_of,
    config_type=RaftConfig,
    durable=RecordUnion(list(RECORDS)),
)

__all__ = [
    "CANDIDATE",
    "FOLLOWER",
    "LEADER",
    "PRE_CANDIDATE",
    "SPEC",
    "AppendEntries",
    "AppendReply",
    "CatchUp",
    "Durable",
    "Entry",
    "Heartbeat",
    "HeartbeatReply",
    "LogEntry",
    "NotLeader",
    "RaftConfig",
    "RaftCore",
    "RaftLog",
    "RequestVote",
    "TermRecord",
    "TimeoutNow",
    "VoteReply",
    "term_of_block",
]

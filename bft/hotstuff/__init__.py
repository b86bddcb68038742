"""Chained HotStuff (Yin et al., PODC'19): one QC per block, the 3-chain commit rule over
consecutive views, locked QCs held by a separate safety-rules object, a pacemaker with timeout
certificates and rotating leaders, and ledger certificates made of commit votes. A pure, sans-I/O
core."""

from __future__ import annotations

from bft.core.interface import CoreContext, ProtocolSpec, message_union
from crypto.codec import Record, RecordUnion

from . import evidence
from .byzantine import equivocate
from .config import HotStuffConfig
from .core import HotStuffCore
from .messages import (
    MESSAGES,
    QC,
    TC,
    CommitCertificate,
    CommitVote,
    CommitVotes,
    FetchBlocks,
    FetchedBlocks,
    HotStuffBlock,
    Proposal,
    Statements,
    Status,
    Timeout,
    Vote,
    genesis_qc,
)
from .safety import SafetyRules, SafetyState


def round_of(message: Record) -> int | None:
    """The view a message belongs to (for per-round partitions in Twins scenarios)."""
    if isinstance(message, Proposal):
        return message.block.header.view
    if isinstance(message, Vote | Timeout | Status):
        return message.view
    return None


def make(context: CoreContext) -> HotStuffCore:
    return HotStuffCore(context)


SPEC = ProtocolSpec(
    name="hotstuff",
    make=make,
    messages=message_union(*MESSAGES),
    byzantine=True,
    round_of=round_of,
    config_type=HotStuffConfig,
    durable=RecordUnion([SafetyState, HotStuffBlock]),
    equivocate=equivocate,
    evidence=evidence.check,
)

__all__ = [
    "QC",
    "SPEC",
    "TC",
    "CommitCertificate",
    "CommitVote",
    "CommitVotes",
    "FetchBlocks",
    "FetchedBlocks",
    "HotStuffBlock",
    "HotStuffConfig",
    "HotStuffCore",
    "Proposal",
    "SafetyRules",
    "SafetyState",
    "Statements",
    "Status",
    "Timeout",
    "Vote",
    "genesis_qc",
    "round_of",
]

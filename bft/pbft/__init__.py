"""PBFT (Castro & Liskov): pre-prepare, prepare, commit; checkpoints that double as ledger
certificates; view changes; state transfer of certified blocks. A pure, sans-I/O core."""

from __future__ import annotations

from bft.core.interface import CoreContext, ProtocolSpec, message_union
from crypto.codec import Record, RecordUnion

from . import evidence
from .byzantine import equivocate
from .config import PbftConfig
from .core import PbftCore
from .messages import (
    MESSAGES,
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    Proposal,
    ViewChange,
)
from .state import ViewRecord, VoteRecord


def round_of(message: Record) -> int | None:
    """The view a message belongs to (for per-round partitions in Twins scenarios)."""
    if isinstance(message, PrePrepare | Prepare | Commit | NewView):
        return message.view
    if isinstance(message, ViewChange):
        return message.new_view
    return None


def make(context: CoreContext) -> PbftCore:
    return PbftCore(context)


SPEC = ProtocolSpec(
    name="pbft",
    make=make,
    messages=message_union(*MESSAGES),
    byzantine=True,
    round_of=round_of,
    config_type=PbftConfig,
    durable=RecordUnion([ViewRecord, VoteRecord, PreparedProof]),
    equivocate=equivocate,
    evidence=evidence.check,
)

__all__ = [
    "SPEC",
    "Checkpoint",
    "Commit",
    "NewView",
    "PbftConfig",
    "PbftCore",
    "PrePrepare",
    "Prepare",
    "Proposal",
    "ViewChange",
]

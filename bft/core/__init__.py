"""Protocol-agnostic pieces of the consensus cores: the interface and its ``Ready`` contract,
quorum maths and vote tallies, client requests with deduplication and batching, admission, the
shared catch-up messages, and errors. Pure: no I/O, no clock, no threads."""

from .admission import AdmissionPolicy, VerifiedCache, check_transactions, verify_signatures
from .base import CoreBase
from .errors import CoreError, LocalMisuse, Rejected, Rejections, SafetyViolation
from .interface import (
    Core,
    CoreContext,
    CoreStatus,
    LedgerState,
    ProtocolSpec,
    Signer,
    message_union,
    serve_block_request,
)
from .messages import BlockRequest, BlockResponse
from .quorum import VoteTally, byzantine_faults, byzantine_quorum, crash_faults, majority
from .ready import BROADCAST, Outbound, Ready, Reply
from .requests import BatchPolicy, ClientTable, Mempool, Request, Status, requests_of

__all__ = [
    "BROADCAST",
    "AdmissionPolicy",
    "BatchPolicy",
    "BlockRequest",
    "BlockResponse",
    "ClientTable",
    "Core",
    "CoreBase",
    "CoreContext",
    "CoreError",
    "CoreStatus",
    "LedgerState",
    "LocalMisuse",
    "Mempool",
    "Outbound",
    "ProtocolSpec",
    "Ready",
    "Rejected",
    "Rejections",
    "Reply",
    "Request",
    "SafetyViolation",
    "Signer",
    "Status",
    "VerifiedCache",
    "VoteTally",
    "byzantine_faults",
    "byzantine_quorum",
    "check_transactions",
    "crash_faults",
    "majority",
    "message_union",
    "requests_of",
    "serve_block_request",
    "verify_signatures",
]

"""Errors of the ledger package. Each names the height (and, for files, the place) at fault."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of the ledger package's errors."""


class BlockError(LedgerError):
    """A block breaks a ledger rule: linkage, Merkle root, certificate, transactions."""

    def __init__(self, height: int, reason: str) -> None:
        self.height = height
        self.reason = reason
        super().__init__(f"height {height}: {reason}")


class ReceiptError(LedgerError):
    """A receipt does not prove what it claims."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StoreError(LedgerError):
    """The on-disk store cannot do what was asked (wrong chain, locked, damaged, failed)."""


class CorruptRecord(StoreError):
    """A record on disk fails its checksum, its decoding or the hash chain.

    ``height`` is the height the record should hold; ``segment`` and ``offset`` say where it is.
    """

    def __init__(self, height: int, segment: str, offset: int, reason: str) -> None:
        self.height = height
        self.segment = segment
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt record for height {height} at {segment}:{offset}: {reason}")

"""The ledger: blocks and transactions, the hash chain, verification, receipts, and the on-disk
store.

The types and verification are pure; :mod:`ledger.store` is the one module that does file I/O.
"""

from crypto.committee import BFT_PROTOCOLS, PROTOCOLS

from .block import (
    MAX_BLOCK_TXS,
    MAX_TX_SIZE,
    Block,
    BlockHeader,
    commit_domain,
    genesis_hash,
    make_header,
)
from .errors import BlockError, CorruptRecord, LedgerError, ReceiptError, StoreError
from .receipt import Receipt
from .tx import Transaction, looks_signed, tx_domain, txid_of
from .verify import (
    ChainSummary,
    CommitteeSchedule,
    verify_block,
    verify_certificate,
    verify_chain,
)

__all__ = [
    "BFT_PROTOCOLS",
    "MAX_BLOCK_TXS",
    "MAX_TX_SIZE",
    "PROTOCOLS",
    "Block",
    "BlockError",
    "BlockHeader",
    "ChainSummary",
    "CommitteeSchedule",
    "CorruptRecord",
    "LedgerError",
    "Receipt",
    "ReceiptError",
    "StoreError",
    "Transaction",
    "commit_domain",
    "genesis_hash",
    "looks_signed",
    "make_header",
    "tx_domain",
    "txid_of",
    "verify_block",
    "verify_certificate",
    "verify_chain",
]

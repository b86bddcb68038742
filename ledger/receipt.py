"""Receipts: a transaction, its block header and certificate, and its Merkle path.

A receipt is checked offline against the committee's public keys alone: the certificate shows a
quorum committed the header, and the Merkle path shows the transaction is leaf ``index`` of the
header's root. A receipt says nothing about blocks before or after its own.
"""

from __future__ import annotations

from crypto import Committee, QuorumCertificate, verify_inclusion
from crypto.codec import Bytes, CodecError, Nested, Record, Seq, UInt, record, wire
from crypto.hashing import DIGEST_SIZE

from .block import MAX_BLOCK_TXS, MAX_TX_SIZE, BlockHeader
from .errors import BlockError, ReceiptError
from .tx import Transaction, txid_of
from .verify import verify_certificate

RECEIPT_TAG = 0x13
_MAX_PATH = 64


@record(tag=RECEIPT_TAG)
class Receipt(Record):
    header: BlockHeader = wire(Nested(BlockHeader))
    certificate: QuorumCertificate = wire(Nested(QuorumCertificate))
    tx: bytes = wire(Bytes(min_size=1, max_size=MAX_TX_SIZE))
    index: int = wire(UInt(MAX_BLOCK_TXS - 1))
    path: tuple[bytes, ...] = wire(Seq(Bytes(DIGEST_SIZE), max_len=_MAX_PATH))

    def _check(self) -> None:
        if self.index >= self.header.tx_count:
            raise CodecError("index is beyond the block's transactions", "Receipt.index")

    @property
    def txid(self) -> bytes:
        return txid_of(self.tx)

    @property
    def height(self) -> int:
        return self.header.height

    def transaction(self) -> Transaction:
        return Transaction.decode(self.tx)

    def verify_inclusion(self) -> None:
        """Raise :class:`ReceiptError` unless the Merkle path puts ``tx`` in the header's root
        (the certificate is not checked: see :meth:`verify`)."""
        header = self.header
        if not verify_inclusion(self.tx, self.index, header.tx_count, self.path, header.tx_root):
            raise ReceiptError("the Merkle path does not lead to the header's root")

    def verify(self, committee: Committee) -> None:
        """Raise :class:`ReceiptError` unless the receipt proves the transaction committed."""
        header = self.header
        self.verify_inclusion()
        try:
            verify_certificate(header, self.certificate, committee)
        except BlockError as exc:
            raise ReceiptError(exc.reason) from None

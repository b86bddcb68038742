"""Admission of client transactions: size, form and (when required) signatures, per batch.

The driver admits a client's batch before handing its requests to ``propose``; a replica that
receives transactions inside a proposal checks them the same way before voting. Signatures of a
batch are checked in one call, so a runtime can move the whole batch to a worker thread in one
hop. :class:`VerifiedCache` remembers transaction ids whose signatures were checked (bounded), so
a transaction admitted from its client is not checked again when it arrives in a proposal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crypto.codec import CodecError
from crypto.keys import PUBLIC_KEY_SIZE
from ledger import Transaction, txid_of
from ledger.tx import parse_transaction

from .requests import Request

UNSIGNED_UNDER_A_KEY = "unsigned transaction under a 32-byte client id, a signing client's key"


def unsigned_under_a_key(client: bytes, signed: bool) -> bool:
    """An unsigned transaction whose client id has the size of a public key. A signing client's
    id is its key, which anyone can read in the ledger; unsigned transactions under it would take
    that client's sequence numbers, and its own requests would be refused as already used. The
    ledger format allows such ids; replicas neither admit nor vote for them."""
    return not signed and len(client) == PUBLIC_KEY_SIZE


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    chain_id: str
    max_tx_bytes: int = 64 * 1024
    require_signatures: bool = False


class VerifiedCache:
    """A bounded set of transaction ids whose client signatures are known to be valid."""

    __slots__ = ("_ids", "capacity")

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[bytes, None] = OrderedDict()

    def add(self, txids: Iterable[bytes]) -> None:
        for txid in txids:
            self._ids[txid] = None
            self._ids.move_to_end(txid)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self._ids

    def __len__(self) -> int:
        return len(self._ids)


def check_transactions(
    raws: Sequence[bytes], policy: AdmissionPolicy, cache: VerifiedCache | None = None
) -> tuple[list[Request], list[tuple[int, str]]]:
    """Admit what passes; return the admitted requests and ``(index, reason)`` for the rest."""
    admitted: list[Request] = []
    refused: list[tuple[int, str]] = []
    verified: list[bytes] = []
    for i, raw in enumerate(raws):
        if len(raw) > policy.max_tx_bytes:
            refused.append((i, f"transaction of {len(raw)} bytes exceeds {policy.max_tx_bytes}"))
            continue
        # The fields are parsed in place; a Transaction is built from them only to check a
        # signature (and decoded only when malformed, to say what is wrong).
        fields = parse_transaction(raw) if type(raw) is bytes else None
        if fields is None:
            try:
                tx = Transaction.decode(raw)
            except CodecError as exc:
                refused.append((i, f"malformed transaction: {exc}"))
                continue
            fields = (tx.client, tx.seq, tx.payload, tx.signature)
        client, seq, payload, signature = fields
        signed = bool(signature)
        if unsigned_under_a_key(client, signed):
            refused.append((i, UNSIGNED_UNDER_A_KEY))
            continue
        if signed or policy.require_signatures:
            if not signed:
                refused.append((i, "unsigned transaction; this chain requires client signatures"))
                continue
            txid = txid_of(raw)
            if cache is None or txid not in cache:
                tx = Transaction.from_checked(
                    client=client, seq=seq, payload=payload, signature=signature
                )
                if not tx.verify_signature(policy.chain_id):
                    refused.append((i, "invalid client signature"))
                    continue
                verified.append(txid)
        admitted.append(Request(raw, client, seq, signed, (client, seq)))
    if cache is not None and verified:
        cache.add(verified)
    return admitted, refused


def verify_signatures(
    raws: Sequence[bytes], chain_id: str, cache: VerifiedCache | None = None
) -> list[bytes]:
    """Check the signatures of a batch (for a runtime's worker thread); return the good txids.

    Feeding the result to ``cache.add`` lets a core skip them later.
    """
    good = []
    for raw in raws:
        txid = txid_of(raw)
        if cache is not None and txid in cache:
            continue
        try:
            tx = Transaction.decode(raw)
        except CodecError:
            continue
        if tx.is_signed and tx.verify_signature(chain_id):
            good.append(txid)
    return good

"""A transaction's id is its Merkle leaf hash, whichever way it is asked for."""

from __future__ import annotations

from crypto import leaf_hash
from ledger import txid_of


def test_an_id_is_the_leaf_hash_for_bytes_and_for_other_buffers() -> None:
    raw = b"\x86\x12\x01\x41c\x01\x40\x40"
    assert txid_of(raw) == leaf_hash(raw)
    assert txid_of(raw) == leaf_hash(raw)  # remembered: the same answer
    assert txid_of(bytes(raw)) == leaf_hash(raw)
    assert txid_of(bytearray(raw)) == leaf_hash(raw)  # not hashable: computed each time
    assert txid_of(memoryview(raw)) == leaf_hash(raw)
    other = raw[:-1] + b"\x41"
    assert txid_of(other) == leaf_hash(other) != txid_of(raw)


def test_only_small_transactions_ids_are_remembered() -> None:
    """The cache holds the encodings it was asked about: large ones would make it large."""
    from ledger.tx import REMEMBERED_TX_BYTES, _recent_txid

    _recent_txid.cache_clear()
    small, large = b"s" * REMEMBERED_TX_BYTES, b"l" * (REMEMBERED_TX_BYTES + 1)
    assert txid_of(small) == leaf_hash(small) and txid_of(large) == leaf_hash(large)
    assert _recent_txid.cache_info().currsize == 1

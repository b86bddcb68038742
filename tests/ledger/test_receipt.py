"""Receipts verify offline against the committee, and tampering with any part is found."""

from __future__ import annotations

import dataclasses

import pytest

from crypto import Committee, MerkleTree, SigningKey
from ledger import Receipt, ReceiptError
from tests.ledger.chain import CHAIN, COMMITTEE, build_chain, certify

BLOCK = build_chain(1, txs_per_block=9)[0]


def receipt_for(index: int) -> Receipt:
    return Receipt(
        header=BLOCK.header,
        certificate=BLOCK.certificate,
        tx=BLOCK.txs[index],
        index=index,
        path=MerkleTree(BLOCK.txs).proof(index),
    )


@pytest.mark.parametrize("index", range(9))
def test_receipt_verifies(index: int) -> None:
    r = receipt_for(index)
    r.verify(COMMITTEE)
    Receipt.decode(r.encode()).verify(COMMITTEE)
    assert r.transaction().encode() == BLOCK.txs[index]


def test_tampered_receipts() -> None:
    r = receipt_for(4)
    cases = {
        "other tx": dataclasses.replace(r, tx=BLOCK.txs[5]),
        "other index": dataclasses.replace(r, index=3),
        "bad path": dataclasses.replace(r, path=(bytes(32), *r.path[1:])),
        "short path": dataclasses.replace(r, path=r.path[:-1]),
        "other view": dataclasses.replace(
            r, header=dataclasses.replace(r.header, view=r.header.view + 1)
        ),
        "thin certificate": dataclasses.replace(
            r, certificate=certify(BLOCK.header, signers=(0, 1))
        ),
    }
    for name, bad in cases.items():
        with pytest.raises(ReceiptError):
            bad.verify(COMMITTEE)
            pytest.fail(name)


def test_receipt_against_another_committee() -> None:
    strangers = Committee(CHAIN, [SigningKey(bytes([50 + i]) * 32).public_key for i in range(4)])
    with pytest.raises(ReceiptError, match="invalid signature"):
        receipt_for(0).verify(strangers)


def test_forged_unsigned_receipt_is_refused_by_a_bft_committee() -> None:
    """Anyone can write an unsigned acknowledgement set; only a raft committee accepts one."""
    from crypto import MerkleTree, QuorumCertificate
    from ledger import Transaction, genesis_hash, make_header

    tx = Transaction(client=b"mallory", seq=1, payload=b"pay mallory 10^6", signature=b"").encode()
    header = make_header(
        chain_id=CHAIN,
        height=1,
        prev_hash=genesis_hash(CHAIN),
        txs=[tx],
        protocol="raft",
        view=9,
        proposer=0,
    )
    forged = Receipt(
        header=header,
        certificate=QuorumCertificate.unsigned(header.commit_statement(), [0, 1, 2], 4),
        tx=tx,
        index=0,
        path=MerkleTree([tx]).proof(0),
    )
    with pytest.raises(ReceiptError, match="committee runs 'pbft'"):
        forged.verify(COMMITTEE)

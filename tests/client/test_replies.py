"""How a client turns replicas' Committed frames into receipts: f+1 matching reports, the block's
certificate checked once, and the Merkle evidence as leaves or as paths; tampering is refused."""

from __future__ import annotations

import trio

from bft.client.client import Client, ClientConfig, _Pending
from bft.client.protocol import Committed
from crypto import MerkleTree
from ledger import Transaction
from tests.ledger.chain import CHAIN, COMMITTEE, build_chain, certify

BLOCK = build_chain(1, txs_per_block=12)[0]


def client_with(seq: int, raw: bytes) -> Client:
    config = ClientConfig(COMMITTEE, {0: ("127.0.0.1", 1)}, None, "pbft")
    client = Client(config, nursery=None)  # type: ignore[arg-type]  # no connections needed here
    client.client_id = Transaction.decode(raw).client
    client._pending[seq] = _Pending(seq, raw, trio.Event(), deadline=float("inf"))
    return client


def committed(index: int, *, leaves: bool, tamper: bool = False) -> Committed:
    tree = MerkleTree(BLOCK.txs)
    tx = Transaction.decode(BLOCK.txs[index])
    evidence: dict[str, object] = {"paths": (), "leaves": b"".join(tree.levels[0])}
    if not leaves:
        evidence = {"paths": (b"".join(tree.proof(index)),), "leaves": b""}
    if tamper:
        if leaves:
            evidence["leaves"] = bytes(32) + evidence["leaves"][32:]  # type: ignore[index]
        else:
            evidence["paths"] = (bytes(32) + evidence["paths"][0][32:],)  # type: ignore[index]
    return Committed(
        header=BLOCK.header,
        certificate=BLOCK.certificate,
        clients=(tx.client,),
        seqs=(tx.seq,),
        indexes=(index,),
        **evidence,  # type: ignore[arg-type]
    )


def test_leaves_or_paths_give_the_same_valid_receipt() -> None:
    for leaves in (True, False):
        index = 3
        raw = BLOCK.txs[index]
        seq = Transaction.decode(raw).seq
        client = client_with(seq, raw)
        client._on_committed(0, committed(index, leaves=leaves))
        pending = client._pending[seq]
        assert not pending.done.is_set(), "one report is not f+1"
        client._on_committed(1, committed(index, leaves=leaves))
        assert pending.done.is_set() and pending.receipt is not None
        pending.receipt.verify(COMMITTEE)
        assert pending.receipt.path == MerkleTree(BLOCK.txs).proof(index)


def test_tampered_evidence_is_refused() -> None:
    for leaves in (True, False):
        raw = BLOCK.txs[0]
        seq = Transaction.decode(raw).seq
        client = client_with(seq, raw)
        for replica in (0, 1):
            client._on_committed(replica, committed(0, leaves=leaves, tamper=True))
        assert client._pending[seq].receipt is None
        assert client.stats["bad_receipts"] >= 1


def test_a_certificate_that_does_not_verify_is_refused() -> None:
    raw = BLOCK.txs[1]
    seq = Transaction.decode(raw).seq
    client = client_with(seq, raw)
    forged = certify(BLOCK.header, signers=(0, 1))
    good = committed(1, leaves=True)
    bad = Committed(
        header=good.header,
        certificate=forged,
        clients=good.clients,
        seqs=good.seqs,
        indexes=good.indexes,
        paths=good.paths,
        leaves=good.leaves,
    )
    for replica in (0, 1):
        client._on_committed(replica, bad)
    assert client._pending[seq].receipt is None and client.stats["bad_certificates"] == 1
    assert COMMITTEE.chain_id == CHAIN


def test_committed_frames_are_checked_when_decoded() -> None:
    import pytest

    from crypto.codec import CodecError

    good = committed(2, leaves=True)
    with pytest.raises(CodecError, match="leaf hashes"):
        Committed(
            header=good.header,
            certificate=good.certificate,
            clients=good.clients,
            seqs=good.seqs,
            indexes=good.indexes,
            paths=(),
            leaves=good.leaves[:-32],
        )
    with pytest.raises(CodecError, match="beyond"):
        Committed(
            header=good.header,
            certificate=good.certificate,
            clients=good.clients,
            seqs=good.seqs,
            indexes=(99,),
            paths=(),
            leaves=good.leaves,
        )
    assert Committed.decode(good.encode()) == good

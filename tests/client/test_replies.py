"""How a client turns replicas' Committed frames into receipts: f+1 matching reports, the block's
certificate checked once, and the Merkle evidence as leaves or as paths; tampering is refused."""

from __future__ import annotations

import dataclasses

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


def test_a_faulty_replicas_bad_certificate_does_not_spoil_the_block() -> None:
    """One faulty replica reports the right place with a certificate that does not verify, just
    after an honest one (so its report completes f+1). The next honest report must still give
    the receipt: a bad certificate says nothing about the block."""
    raw = BLOCK.txs[4]
    seq = Transaction.decode(raw).seq
    client = client_with(seq, raw)
    good = committed(4, leaves=True)
    bad = Committed(
        header=good.header,
        certificate=certify(BLOCK.header, signers=(0, 1)),
        clients=good.clients,
        seqs=good.seqs,
        indexes=good.indexes,
        paths=good.paths,
        leaves=good.leaves,
    )
    client._on_committed(0, good)
    client._on_committed(3, bad)
    pending = client._pending[seq]
    assert pending.receipt is None and client.stats["bad_certificates"] == 1
    client._on_committed(1, good)
    assert pending.done.is_set() and pending.receipt is not None
    pending.receipt.verify(COMMITTEE)


def test_a_bad_certificate_costs_one_check_per_frame() -> None:
    """A frame reporting several of the client's transactions is checked once, not once per
    transaction (a faulty replica would otherwise buy a certificate check per entry)."""
    decoded = [Transaction.decode(raw) for raw in BLOCK.txs]
    mine = b"client-1"
    indexes = tuple(i for i, tx in enumerate(decoded) if tx.client == mine)
    assert len(indexes) >= 3
    client = client_with(decoded[indexes[0]].seq, BLOCK.txs[indexes[0]])
    for i in indexes[1:]:
        client._pending[decoded[i].seq] = _Pending(
            decoded[i].seq, BLOCK.txs[i], trio.Event(), deadline=float("inf")
        )
    frame = {
        "header": BLOCK.header,
        "clients": tuple(mine for _ in indexes),
        "seqs": tuple(decoded[i].seq for i in indexes),
        "indexes": indexes,
        "paths": (),
        "leaves": b"".join(MerkleTree(BLOCK.txs).levels[0]),
    }
    client._on_committed(0, Committed(certificate=BLOCK.certificate, **frame))  # type: ignore[arg-type]
    forged = certify(BLOCK.header, signers=(0, 1))
    client._on_committed(3, Committed(certificate=forged, **frame))  # type: ignore[arg-type]
    assert client.stats["bad_certificates"] == 1
    client._on_committed(1, Committed(certificate=BLOCK.certificate, **frame))  # type: ignore[arg-type]
    assert all(client._pending[decoded[i].seq].receipt is not None for i in indexes)


def test_a_replica_counts_once_and_cannot_fill_memory_with_reports() -> None:
    """A faulty replica reporting a thousand places that do not exist holds one entry in the
    client's tally, and its reports count as one: f+1 takes another replica."""
    raw = BLOCK.txs[5]
    seq = Transaction.decode(raw).seq
    client = client_with(seq, raw)
    good = committed(5, leaves=True)
    for k in range(1, 1001):
        header = dataclasses.replace(good.header, height=good.header.height + k)
        client._on_committed(3, dataclasses.replace(good, header=header))
    pending = client._pending[seq]
    assert len(pending.votes) == 1 and not pending.done.is_set()
    client._on_committed(3, good)
    client._on_committed(3, good)
    assert not pending.done.is_set(), "one replica's report twice is not f+1"
    client._on_committed(0, good)
    assert pending.receipt is not None and len(pending.votes) == 1


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

"""How a client turns replicas' Committed frames into receipts: one report whose evidence verifies
(f+1 matching ones from a replica that sent evidence that did not), the block's certificate
checked once, the Merkle evidence as leaves or as paths; tampering is refused, and what one
replica alone says against a request (a refusal, another transaction at its place) sends it to
every replica instead of ending it."""

from __future__ import annotations

import dataclasses

import trio

from bft.client.client import Client, ClientConfig, Rejected, _Pending
from bft.client.protocol import Committed, Refusal, Refused, Submit
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
        if leaves:  # leaves that miss the header's root: the senders are suspect, and an
            # honest replica's report still settles the request
            assert client._suspects == {0, 1}
            client._on_committed(2, committed(0, leaves=True))
            assert client._pending[seq].receipt is not None


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
    for _ in range(3):
        client._on_committed(0, bad)
    assert client._pending[seq].receipt is None and client.stats["bad_certificates"] == 1
    assert client._suspects == {0}, "checked once, then f+1 must make the same report"
    client._on_committed(1, bad)  # f+1 now: checked again
    assert client._pending[seq].receipt is None and client.stats["bad_certificates"] == 2
    assert COMMITTEE.chain_id == CHAIN


def test_a_faulty_replicas_bad_certificate_does_not_spoil_the_block() -> None:
    """One faulty replica reports the right place with a certificate that does not verify. The
    next honest report must still give the receipt: a bad certificate says nothing about the
    block."""
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
    client._on_committed(3, bad)
    pending = client._pending[seq]
    assert pending.receipt is None and client.stats["bad_certificates"] == 1
    client._on_committed(0, good)
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
    forged = certify(BLOCK.header, signers=(0, 1))
    client._on_committed(3, Committed(certificate=forged, **frame))  # type: ignore[arg-type]
    assert client.stats["bad_certificates"] == 1
    assert all(client._pending[decoded[i].seq].receipt is None for i in indexes)
    client._on_committed(1, Committed(certificate=BLOCK.certificate, **frame))  # type: ignore[arg-type]
    assert all(client._pending[decoded[i].seq].receipt is not None for i in indexes)


def test_a_replica_counts_once_and_cannot_fill_memory_with_reports() -> None:
    """A faulty replica reporting a thousand places that do not exist holds one entry in the
    client's tally and costs one certificate check; its reports count as one: f+1 takes
    another replica."""
    raw = BLOCK.txs[5]
    seq = Transaction.decode(raw).seq
    client = client_with(seq, raw)
    good = committed(5, leaves=True)
    for k in range(1, 1001):
        header = dataclasses.replace(good.header, height=good.header.height + k)
        client._on_committed(3, dataclasses.replace(good, header=header))
    pending = client._pending[seq]
    assert len(pending.votes) == 1 and not pending.done.is_set()
    assert client.stats["bad_certificates"] == 1
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


def connected(client: Client, replicas: range) -> None:
    """Give ``client`` connections to ``replicas`` whose queued frames the test can read."""
    from bft.client.client import _Connection

    for replica in replicas:
        conn = client._conns[replica] = _Connection(replica)
        conn.framed = object()  # type: ignore[assignment]  # only "connected" is looked at


def queued(client: Client, replica: int) -> list[tuple[bytes, ...]]:
    return [Submit.decode(frame).txs for frame in client._conns[replica].outbox.queue]


def test_what_one_replica_says_against_a_request_sends_it_to_every_replica() -> None:
    """A request only the leader has, which the leader alone refuses or places where another
    transaction is, goes to every replica at once (a faulty leader could say anything); only
    f+1 replicas saying so end it."""

    async def main() -> None:
        index = 6
        tx = Transaction.decode(BLOCK.txs[index])
        mine = Transaction(client=tx.client, seq=tx.seq, payload=b"not that one", signature=b"")
        for against in ("refused", "placed elsewhere"):
            client = client_with(tx.seq, mine.encode())
            connected(client, range(4))
            pending = client._pending[tx.seq]
            pending.narrow = True

            def report(replica: int, client: Client = client, against: str = against) -> None:
                if against == "refused":
                    refusal = Refusal(client=tx.client, seq=tx.seq, reason="mempool full")
                    client._on_refused(replica, Refused(items=(refusal,)))
                else:
                    client._on_committed(replica, committed(index, leaves=True))

            report(0)
            assert not pending.done.is_set(), against
            assert not pending.narrow and client.stats["widened"] == 1, against
            assert all(queued(client, r) == [(mine.encode(),)] for r in range(4)), against
            report(0)
            assert client.stats["widened"] == 1, "sent to every replica once"
            report(1)
            assert isinstance(pending.error, Rejected), against

    trio.run(main)


def test_new_requests_go_to_the_leader_of_the_newest_verified_block() -> None:
    """PBFT and Raft: the proposer of the newest certified block the client verified. Not a
    replica that sent evidence that did not verify, not with ``leader_first`` off, not in
    HotStuff (its leader changes every view: see the next test)."""
    raw = BLOCK.txs[7]
    seq = Transaction.decode(raw).seq
    client = client_with(seq, raw)
    assert client._targets() == (), "no block verified yet: every replica"
    client._on_committed(2, committed(7, leaves=False))
    assert client._pending[seq].receipt is not None
    assert client._targets() == (BLOCK.header.proposer,)
    client._suspects.add(BLOCK.header.proposer)
    assert client._targets() == ()
    client._suspects.clear()
    client.config.leader_first = False
    assert client._targets() == ()

    client.config.leader_first = True
    first = BLOCK.header.proposer
    other = dataclasses.replace(BLOCK.header, tx_count=0, proposer=(first + 1) % 4)
    assert client._block_ok(other, other.hash(), certify(other))
    assert client._targets() == (first,), "a block no newer than the newest moves nothing"
    newer = dataclasses.replace(other, height=BLOCK.header.height + 1)
    assert client._block_ok(newer, newer.hash(), certify(newer))
    assert client._targets() == (newer.proposer,), "a view change: the new primary's block"

    rotating = dataclasses.replace(
        BLOCK.header, height=BLOCK.header.height + 1, protocol="hotstuff"
    )
    hotstuff = client_with(seq, raw)
    assert hotstuff._block_ok(rotating, rotating.hash(), certify(rotating))
    assert hotstuff._targets() == ()


def test_hotstuff_requests_go_to_the_leaders_the_newest_verified_answer_names() -> None:
    """HotStuff: where an answer says the next views' leaders are (f+1, at least three distinct
    replicas of the committee), from a replica whose evidence verified, about the newest block
    so far. A hint of another size, with repeats or unknown replicas, about an older block, in
    an answer that does not verify, or naming a suspect, moves nothing."""
    chain = build_chain(3, txs_per_block=12, protocol="hotstuff")
    client = client_with(0, chain[0].txs[0])
    client.config.protocol = "hotstuff"

    def answer(block_index: int, leaders: tuple[int, ...], *, forge: bool = False):  # type: ignore[no-untyped-def]
        """An answer for this client's request in the block, pending again each time."""
        block = chain[block_index]
        index = next(
            i
            for i, raw in enumerate(block.txs)
            if Transaction.decode(raw).client == client.client_id
        )
        tree = MerkleTree(block.txs)
        tx = Transaction.decode(block.txs[index])
        client._pending[tx.seq] = _Pending(tx.seq, block.txs[index], trio.Event(), float("inf"))
        certificate = certify(block.header, signers=(0, 1)) if forge else block.certificate
        return Committed(
            header=block.header,
            certificate=certificate,
            clients=(tx.client,),
            seqs=(tx.seq,),
            indexes=(index,),
            paths=(),
            leaves=b"".join(tree.levels[0]),
            leaders=leaders,
        )

    assert client._targets() == (), "no answer yet: every replica"
    client._on_committed(0, answer(1, (1, 2, 3)))
    assert client._targets() == (1, 2, 3)
    for bad in ((2, 3), (2, 3, 0, 1), (2, 2, 3), (2, 3, 4)):
        client._on_committed(0, answer(1, bad))
        assert client._targets() == (1, 2, 3), bad
    assert client.stats["leader_hints_ignored"] == 4
    client._on_committed(0, answer(0, (3, 0, 1)))
    assert client._targets() == (1, 2, 3), "an answer about an older block"
    client._on_committed(0, answer(2, (3, 0, 1), forge=True))
    assert client._targets() == (1, 2, 3), "evidence that does not verify"
    assert client._suspects == {0}
    client._on_committed(2, answer(2, (2, 3, 0)))
    assert client._targets() == (), "a suspect among them: every replica"
    client._suspects.clear()
    assert client._targets() == (2, 3, 0)
    client.config.leader_first = False
    assert client._targets() == ()

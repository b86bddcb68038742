"""Admission of client transactions, and the Ready contract of every core."""

from __future__ import annotations

import pytest

from bft.core.admission import (
    UNSIGNED_UNDER_A_KEY,
    AdmissionPolicy,
    VerifiedCache,
    check_transactions,
    verify_signatures,
)
from bft.core.base import CoreBase
from bft.core.errors import MAX_REASONS, OTHER_REASONS, LocalMisuse, Rejections
from bft.core.interface import CoreContext, LedgerState
from bft.core.quorum import VoteTally
from bft.core.ready import BROADCAST, Reply
from crypto import Committee, SigningKey
from crypto.codec import Record
from ledger import Transaction, txid_of

CLIENT = SigningKey(b"\x21" * 32)
POLICY = AdmissionPolicy(chain_id="adm", max_tx_bytes=200)


def test_admission_checks_size_form_and_signatures_per_batch() -> None:
    good = Transaction.signed(CLIENT, "adm", 1, b"ok").encode()
    forged = Transaction(
        client=CLIENT.public_key.raw, seq=2, payload=b"x", signature=b"\x00" * 64
    ).encode()
    other_chain = Transaction.signed(CLIENT, "elsewhere", 3, b"ok").encode()
    unsigned = Transaction(client=b"anon", seq=1, payload=b"p", signature=b"").encode()
    big = Transaction(client=b"anon", seq=2, payload=b"p" * 300, signature=b"").encode()
    raws = [good, forged, other_chain, unsigned, big, b"\xff garbage"]
    admitted, refused = check_transactions(raws, POLICY)
    assert [r.raw for r in admitted] == [good, unsigned]
    reasons = dict(refused)
    assert reasons[1] == reasons[2] == "invalid client signature"
    assert "exceeds" in reasons[4] and "malformed" in reasons[5]
    strict = AdmissionPolicy(chain_id="adm", require_signatures=True)
    admitted, refused = check_transactions([good, unsigned], strict)
    assert [r.raw for r in admitted] == [good]
    assert "requires client signatures" in refused[0][1]


def test_an_unsigned_transaction_under_a_signing_clients_id_is_refused() -> None:
    """A signing client's id is its public key, public in the ledger; unsigned transactions
    under it would take its sequence numbers. Shorter unsigned ids are admitted."""
    key_id = CLIENT.public_key.raw
    taken = Transaction(client=key_id, seq=7, payload=b"p", signature=b"").encode()
    short = Transaction(client=key_id[:31], seq=7, payload=b"p", signature=b"").encode()
    admitted, refused = check_transactions([taken, short], POLICY)
    assert [r.raw for r in admitted] == [short]
    assert refused == [(0, UNSIGNED_UNDER_A_KEY)]


def test_verified_cache_skips_checked_signatures_and_is_bounded() -> None:
    cache = VerifiedCache(capacity=2)
    txs = [Transaction.signed(CLIENT, "adm", s, b"p").encode() for s in range(3)]
    assert verify_signatures(txs, "adm", cache) == [txid_of(t) for t in txs]
    cache.add(txid_of(t) for t in txs)
    assert len(cache) == 2 and txid_of(txs[0]) not in cache
    assert verify_signatures(txs, "adm", cache) == [txid_of(txs[0])]


def test_vote_tally_counts_each_replica_once_per_key() -> None:
    tally: VoteTally[str, bytes] = VoteTally()
    assert tally.add("a", 1, b"s1") and not tally.add("a", 1, b"other")
    tally.add("a", 2, b"s2")
    tally.add("b", 1, b"s3")
    assert tally.count("a") == 2 and tally.votes("a")[1] == b"s1"
    assert sorted(tally.voted(1)) == ["a", "b"]
    tally.discard("a")
    assert tally.count("a") == 0 and tally.tallied() == ["b"]


class Echo(CoreBase):
    """A minimal core to check the Ready contract itself."""

    def step(self, sender: int, message: Record) -> None:
        self.broadcast(message)
        self.reply(Reply(b"c", 1, 1, 0))


def echo() -> Echo:
    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    committee = Committee("ready", [k.public_key for k in keys])
    return Echo(
        CoreContext(committee=committee, replica=0, signer=keys[0], ledger=LedgerState("ready"))
    )


def test_ready_is_handed_out_once_until_advance() -> None:
    core = echo()
    assert core.ready() is None
    msg = Transaction(client=b"c", seq=1, payload=b"", signature=b"")
    core.step(1, msg)
    first = core.ready()
    assert first is not None and [m.to for m in first.messages] == [BROADCAST]
    core.step(2, msg)
    assert core.ready() is None, "no new Ready before advance"
    core.advance(first)
    second = core.ready()
    assert second is not None and len(second.messages) == 1 and len(second.replies) == 1
    with pytest.raises(LocalMisuse):
        core.advance(first)
    core.advance(second)
    assert core.ready() is None


def test_persist_snapshot_replaces_the_log() -> None:
    core = echo()
    rec = Transaction(client=b"c", seq=1, payload=b"", signature=b"")
    core.persist(rec)
    core.persist_snapshot([rec])
    ready = core.ready()
    assert ready is not None and ready.persist_replaces and ready.persist == (rec,)
    assert bool(ready)


def test_a_core_never_sends_to_itself() -> None:
    core = echo()
    with pytest.raises(LocalMisuse):
        core.send(0, Transaction(client=b"c", seq=1, payload=b"", signature=b""))


def test_context_is_checked() -> None:
    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    committee = Committee("ready", [k.public_key for k in keys])
    with pytest.raises(ValueError):
        CoreContext(committee=committee, replica=4, signer=keys[0], ledger=LedgerState("ready"))
    with pytest.raises(ValueError):
        CoreContext(committee=committee, replica=0, signer=keys[0], ledger=LedgerState("other"))


@pytest.mark.parametrize("protocol", ["pbft", "hotstuff", "raft"])
def test_a_core_starts_from_the_runtimes_client_table_or_the_whole_ledger(protocol: str) -> None:
    """Each core takes the client table the runtime rebuilt (same limits, no later height), and
    without one rebuilds it from every block it is given: ``LedgerState.of_blocks`` keeps them
    all, so a replica restarted in the simulator remembers the oldest transaction too."""
    from bft.core.requests import ClientTable, Request, Status
    from bft.protocols import spec
    from crypto import QuorumCertificate
    from ledger import Block, genesis_hash, make_header

    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    committee = Committee("table", [k.public_key for k in keys], protocol)
    the = spec(protocol)
    config = the.config_type()
    old = Transaction(client=b"old", seq=1, payload=b"x", signature=b"")
    blocks: list[Block] = []
    for height in range(1, 400):
        txs = (old.encode(),) if height == 1 else ()
        prev = blocks[-1].hash() if blocks else genesis_hash("table")
        header = make_header(
            chain_id="table", height=height, prev_hash=prev, txs=txs, protocol=protocol,
            view=1, proposer=0,
        )  # fmt: skip
        unsigned = QuorumCertificate(statement=bytes(32), signers=b"\xe0", signatures=())
        blocks.append(Block(header=header, txs=txs, certificate=unsigned))

    def core(ledger: LedgerState) -> object:
        return the.make(
            CoreContext(
                committee=committee, replica=0, signer=keys[0], ledger=ledger, config=config
            )
        )

    rebuilt = core(LedgerState.of_blocks("table", blocks))
    assert rebuilt.clients.status(b"old", 1) == (Status.COMMITTED, (1, 0))  # type: ignore[attr-defined]
    table = ClientTable.for_config(config)
    table.record(Request.from_tx(old), 1, 0)
    given = LedgerState("table", 399, blocks[-1].hash(), tuple(blocks[-5:]), table)
    assert core(given).clients is table  # type: ignore[attr-defined]
    with pytest.raises(LocalMisuse, match="other limits"):
        core(LedgerState("table", 399, blocks[-1].hash(), (), ClientTable(window=3)))
    with pytest.raises(LocalMisuse, match="above the ledger"):
        core(LedgerState("table", 0, b"", (), table))


@pytest.mark.parametrize("protocol", ["pbft", "hotstuff", "raft"])
def test_propose_says_why_a_request_was_dropped(protocol: str) -> None:
    """``propose`` returns "" for a request it holds (or answers from the ledger), and the
    pool's reason for one it dropped, so the runtime forgets where to answer it."""
    import dataclasses

    from bft.core.requests import Request
    from bft.protocols import spec

    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    committee = Committee("pool", [k.public_key for k in keys], protocol)
    the = spec(protocol)
    config = dataclasses.replace(the.config_type(), mempool_requests=1)
    core = the.make(
        CoreContext(
            committee=committee, replica=1, signer=keys[1], ledger=LedgerState("pool"),
            config=config,
        )
    )  # fmt: skip

    def request(seq: int) -> Request:
        return Request.from_tx(Transaction(client=b"c", seq=seq, payload=b"x", signature=b""))

    assert core.propose(request(1)) == ""
    assert core.propose(request(1)) == ""  # already pending
    assert core.propose(request(2)) == "mempool full"


def test_rejections_count_a_bounded_number_of_reasons_and_every_rejection() -> None:
    rejections = Rejections(keep=8)
    for height in range(MAX_REASONS + 500):  # a peer's made-up heights, each its own text
        rejections.record(1, "BlockResponse", f"fetched block {height}: bad certificate")
    rejections.record(2, "Prepare", "fetched block 3: bad certificate")  # an old reason
    assert len(rejections.by_reason) == MAX_REASONS + 1
    assert rejections.by_reason[OTHER_REASONS] == 500
    assert rejections.by_reason["fetched block 3: bad certificate"] == 2
    assert rejections.total == MAX_REASONS + 501 == sum(rejections.by_reason.values())
    assert rejections.count("fetched block") == MAX_REASONS + 1
    recent = rejections.recent
    assert (
        len(recent) == 8
        and recent[-2].reason == f"fetched block {MAX_REASONS + 499}: bad certificate"
    )

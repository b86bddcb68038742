"""Blocks, the hash chain and certificate rules (S2 of TESTING.md)."""

from __future__ import annotations

import dataclasses

import pytest

from crypto import Committee, SigningKey
from crypto.codec import CodecError
from ledger import Block, BlockError, BlockHeader, genesis_hash, make_header, verify_chain
from ledger.verify import verify_transactions
from tests.ledger.chain import CHAIN, CLIENT, COMMITTEE, KEYS, RAFT_COMMITTEE, build_chain, certify

CHAIN_OF_6 = build_chain(6)


def replace_header(block: Block, **changes: object) -> Block:
    header = dataclasses.replace(block.header, **changes)
    return Block(header=header, txs=block.txs, certificate=certify(header))


def test_good_chain_verifies() -> None:
    summary = verify_chain(CHAIN_OF_6, chain_id=CHAIN, committee=COMMITTEE, check_transactions=True)
    assert summary.height == 6
    assert summary.last_hash == CHAIN_OF_6[-1].hash()
    assert summary.transactions == sum(len(b.txs) for b in CHAIN_OF_6)


def test_genesis_depends_on_chain_id_only() -> None:
    assert genesis_hash("a") == genesis_hash("a") != genesis_hash("b")
    assert CHAIN_OF_6[0].header.prev_hash == genesis_hash(CHAIN)


def test_block_hash_covers_every_header_field() -> None:
    h = CHAIN_OF_6[2].header
    changes = dict(
        chain_id="other", height=h.height + 1, prev_hash=bytes(32), tx_root=bytes(32),
        tx_count=h.tx_count + 1, protocol="hotstuff", view=h.view + 1, proposer=h.proposer + 1,
    )  # fmt: skip
    hashes = {h.hash()}
    for field, value in changes.items():
        hashes.add(dataclasses.replace(h, **{field: value}).hash())
    assert len(hashes) == len(changes) + 1


def test_commit_statement_binds_protocol_view_height_and_hash() -> None:
    h = CHAIN_OF_6[2].header
    statements = {h.commit_statement()}
    for field, value in dict(protocol="hotstuff", view=h.view + 1, height=h.height + 1).items():
        statements.add(dataclasses.replace(h, **{field: value}).commit_statement())
    statements.add(h.commit_statement(block_hash=bytes(32)))
    assert len(statements) == 5


def test_tx_count_must_match() -> None:
    b = CHAIN_OF_6[1]
    with pytest.raises(CodecError, match="transactions"):
        Block(header=b.header, txs=b.txs + (b"x",), certificate=b.certificate)


@pytest.mark.parametrize(
    "mutate,words",
    [
        (lambda c: c[:2] + c[3:], "claims height"),  # a gap
        (lambda c: [c[0], replace_header(c[1], prev_hash=bytes(32)), *c[2:]], "link is broken"),
        (lambda c: [replace_header(c[0], chain_id="other"), *c[1:]], "for chain"),
        (lambda c: [replace_header(c[0], tx_root=bytes(32)), *c[1:]], "Merkle root"),
        (lambda c: [c[1], c[0], *c[2:]], "claims height"),
    ],
)
def test_chain_breaks_are_found_at_their_height(mutate, words) -> None:  # type: ignore[no-untyped-def]
    chain = mutate(list(CHAIN_OF_6))
    with pytest.raises(BlockError, match=words) as err:
        verify_chain(chain, chain_id=CHAIN, committee=COMMITTEE)
    assert err.value.height in (1, 2, 3)


def with_cert(block: Block, cert) -> Block:  # type: ignore[no-untyped-def]
    return Block(header=block.header, txs=block.txs, certificate=cert)


@pytest.mark.parametrize(
    "make_cert,words",
    [
        (lambda h: certify(h, signers=(0, 1)), "2 signers, 3 required"),
        (
            lambda h: certify(
                h, statement=dataclasses.replace(h, view=h.view + 1).commit_statement()
            ),
            "another statement",
        ),
        (
            lambda h: certify(h, keys=[SigningKey(bytes([9 + i]) * 32) for i in range(4)]),
            "invalid signature",
        ),
        (lambda h: certify(h, unsigned=True), "no signatures"),
    ],
)
def test_bft_certificate_rules(make_cert, words) -> None:  # type: ignore[no-untyped-def]
    chain = list(CHAIN_OF_6)
    chain[3] = with_cert(chain[3], make_cert(chain[3].header))
    with pytest.raises(BlockError, match=words) as err:
        verify_chain(chain, chain_id=CHAIN, committee=COMMITTEE)
    assert err.value.height == 4
    # Without a committee only the structure is checked.
    verify_chain(chain, chain_id=CHAIN)


def test_committee_of_another_chain() -> None:
    other = Committee("otherchain", COMMITTEE.members)
    with pytest.raises(BlockError, match="committee is for chain"):
        verify_chain(CHAIN_OF_6, chain_id=CHAIN, committee=other)


def test_raft_blocks_carry_a_majority_acknowledgement() -> None:
    raft = build_chain(4, protocol="raft")
    verify_chain(raft, chain_id=CHAIN, committee=RAFT_COMMITTEE)
    thin = list(raft)
    thin[2] = with_cert(thin[2], certify(thin[2].header, signers=(0,), unsigned=True))
    with pytest.raises(BlockError, match="1 signers, 3 required"):
        verify_chain(thin, chain_id=CHAIN, committee=RAFT_COMMITTEE)


def test_a_block_cannot_choose_a_weaker_certificate_rule() -> None:
    # An unsigned "raft" block is refused by a BFT committee, whatever its header says.
    raft = build_chain(2, protocol="raft")
    with pytest.raises(BlockError, match="block of protocol 'raft'; the committee runs 'pbft'"):
        verify_chain(raft, chain_id=CHAIN, committee=COMMITTEE)
    # A raft committee accepts only raft blocks.
    with pytest.raises(BlockError, match="block of protocol 'pbft'"):
        verify_chain(build_chain(2), chain_id=CHAIN, committee=RAFT_COMMITTEE)


def test_bft_committee_accepts_both_bft_protocols() -> None:
    first = build_chain(3, protocol="pbft")
    then = build_chain(3, protocol="hotstuff", start_height=4, prev_hash=first[-1].hash(), seed=3)
    assert verify_chain(first + then, chain_id=CHAIN, committee=COMMITTEE).height == 6


def test_proposer_must_be_a_member() -> None:
    chain = list(build_chain(2))
    chain[1] = replace_header(chain[1], proposer=4)
    with pytest.raises(BlockError, match="proposer 4 is not a committee member"):
        verify_chain(chain, chain_id=CHAIN, committee=COMMITTEE)


def test_transaction_checks() -> None:
    block = CHAIN_OF_6[0]
    verify_transactions(block)
    txs = list(block.txs) or [b"x"]
    txs[0] = b"\x00garbage"
    header = make_header(
        chain_id=CHAIN,
        height=1,
        prev_hash=genesis_hash(CHAIN),
        txs=txs,
        protocol="pbft",
        view=0,
        proposer=0,
    )
    broken = Block(header=header, txs=tuple(txs), certificate=certify(header))
    with pytest.raises(BlockError, match="transaction 0 is malformed"):
        verify_transactions(broken)


def test_forged_client_signature_is_found() -> None:
    from ledger import Transaction

    good = Transaction.signed(CLIENT, CHAIN, 1, b"pay 5")
    forged = dataclasses.replace(good, payload=b"pay 500")
    assert good.verify_signature(CHAIN)
    assert not forged.verify_signature(CHAIN)
    assert not good.verify_signature("otherchain")
    txs = [forged.encode()]
    header = make_header(
        chain_id=CHAIN,
        height=1,
        prev_hash=genesis_hash(CHAIN),
        txs=txs,
        protocol="pbft",
        view=0,
        proposer=0,
    )
    block = Block(header=header, txs=tuple(txs), certificate=certify(header))
    with pytest.raises(BlockError, match="invalid client signature"):
        verify_transactions(block)


def test_signed_transaction_needs_a_public_key_as_client() -> None:
    from ledger import Transaction

    with pytest.raises(CodecError, match="public key"):
        Transaction(client=b"short", seq=1, payload=b"", signature=b"s" * 64)
    with pytest.raises(CodecError, match="64 bytes"):
        Transaction(client=KEYS[0].public_key.raw, seq=1, payload=b"", signature=b"s" * 10)


def test_header_chain_id_is_validated() -> None:
    h = CHAIN_OF_6[0].header
    with pytest.raises(CodecError, match="chain id"):
        dataclasses.replace(h, chain_id="bad chain")
    with pytest.raises(CodecError):
        dataclasses.replace(h, height=0)
    assert BlockHeader.decode(h.encode()) == h


def test_a_committee_schedule_verifies_a_chain_that_switched_mode() -> None:
    from ledger import CommitteeSchedule

    first = build_chain(3, protocol="pbft")
    then = build_chain(3, protocol="raft", start_height=4, prev_hash=first[-1].hash(), seed=2)
    back = build_chain(2, protocol="pbft", start_height=7, prev_hash=then[-1].hash(), seed=3)
    schedule = CommitteeSchedule([(1, COMMITTEE), (4, RAFT_COMMITTEE), (7, COMMITTEE)])
    assert verify_chain(first + then + back, chain_id=CHAIN, committee=schedule).height == 8
    # The raft blocks are refused when the schedule says PBFT governs them.
    wrong = CommitteeSchedule([(1, COMMITTEE), (5, RAFT_COMMITTEE)])
    with pytest.raises(BlockError, match="height 4") as err:
        verify_chain(first + then + back, chain_id=CHAIN, committee=wrong)
    assert "protocol 'raft'" in err.value.reason
    # One segment on its own, from a trusted height and hash.
    summary = verify_chain(then, chain_id=CHAIN, committee=schedule, start=(3, first[-1].hash()))
    assert summary.height == 6
    with pytest.raises(ValueError, match="starts at height 1"):
        CommitteeSchedule([(2, COMMITTEE)])

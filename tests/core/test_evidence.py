"""Evidence of equivocation: what each protocol's checker accepts and what it refuses, the
record's round trip, and the store (atomic files, one per pair, bounded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bft.core.evidence import Evidence, EvidenceError, find_signer, verify_evidence
from bft.hotstuff import SPEC as HOTSTUFF
from bft.hotstuff.messages import Vote
from bft.node.evidence import EvidenceStore, list_evidence
from bft.pbft import SPEC as PBFT
from crypto import Committee, SigningKey
from tests.hotstuff.chain import COMMITTEE as HS_COMMITTEE
from tests.hotstuff.chain import GENESIS, KEYS, ST, block_on, propose, tx
from tests.pbft.harness import Cluster, request

TX = [request(1, 1).raw]
TX2 = [request(2, 1).raw]


def real_pbft() -> tuple[Cluster, Committee]:
    """The PBFT harness signs with a fast insecure scheme; evidence needs real Ed25519."""
    c = Cluster(4)
    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    committee = Committee(c.committee.chain_id, [k.public_key for k in keys], "pbft")
    c.sign = lambda replica, digest: keys[replica].sign_digest(digest)  # type: ignore[method-assign]
    return c, committee


def test_pbft_two_pre_prepares_for_one_slot_are_evidence() -> None:
    c, committee = real_pbft()
    a, b = c.preprepare(0, 3, TX), c.preprepare(0, 3, TX2)
    text = PBFT.evidence(a, b, committee, 0)  # type: ignore[misc]
    assert "replica 0 signed two pre-prepares for view 0 sequence 3" in text
    assert find_signer(a, b, committee, PBFT.evidence) == (0, text)  # type: ignore[arg-type]
    d1, d2 = a.proposal.digest(), b.proposal.digest()
    assert "prepares" in PBFT.evidence(c.prepare(2, 0, 3, d1), c.prepare(2, 0, 3, d2), committee, 2)  # type: ignore[misc]
    assert "commits" in PBFT.evidence(c.commit(1, 0, 3, d1), c.commit(1, 0, 3, d2), committee, 1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("same", "agree"),
        ("other-seq", "different views or sequence numbers"),
        ("other-view", "different views or sequence numbers"),
        ("wrong-signer", "not replica 1's"),
        ("mixed-kinds", "cannot conflict"),
        ("forged", "not replica 0's"),
    ],
)
def test_pbft_checker_refuses_what_is_not_evidence(case: str, reason: str) -> None:
    c, committee = real_pbft()
    a = c.preprepare(0, 3, TX)
    signer = 0
    if case == "same":
        b = c.preprepare(0, 3, TX)
    elif case == "other-seq":
        b = c.preprepare(0, 4, TX2)
    elif case == "other-view":
        b = c.preprepare(4, 3, TX2, primary=0)
    elif case == "wrong-signer":
        b, signer = c.preprepare(0, 3, TX2), 1
    elif case == "mixed-kinds":
        b = c.prepare(0, 0, 3, a.proposal.digest())
    else:
        b = c.preprepare(0, 3, TX2)
        b = type(b)(view=b.view, seq=b.seq, proposal=b.proposal, signature=bytes(64))
    with pytest.raises(EvidenceError, match=reason):
        PBFT.evidence(a, b, committee, signer)  # type: ignore[misc]


def test_hotstuff_two_proposals_or_two_votes_for_one_view_are_evidence() -> None:
    b1, b2 = block_on(GENESIS, 1, txs=[tx(1)]), block_on(GENESIS, 1, txs=[tx(2)])
    p1, p2 = propose(b1), propose(b2)
    signer = b1.header.proposer
    assert "two proposals for view 1" in HOTSTUFF.evidence(p1, p2, HS_COMMITTEE, signer)  # type: ignore[misc]
    with pytest.raises(EvidenceError, match="same block"):
        HOTSTUFF.evidence(p1, propose(b1), HS_COMMITTEE, signer)  # type: ignore[misc]
    with pytest.raises(EvidenceError, match="different views"):
        HOTSTUFF.evidence(p1, propose(block_on(GENESIS, 2, txs=[tx(2)])), HS_COMMITTEE, signer)  # type: ignore[misc]

    def vote(block: object, key: int = 2) -> Vote:
        h = block.header  # type: ignore[attr-defined]
        sig = KEYS[key].sign_digest(ST.vote_digest(h.view, h.height, h.hash()))
        return Vote(view=h.view, height=h.height, block_hash=h.hash(), signature=sig, commits=())

    assert "two votes for view 1" in HOTSTUFF.evidence(vote(b1), vote(b2), HS_COMMITTEE, 2)  # type: ignore[misc]
    with pytest.raises(EvidenceError, match="not replica 3's"):
        HOTSTUFF.evidence(vote(b1), vote(b2), HS_COMMITTEE, 3)  # type: ignore[misc]


def make_evidence() -> tuple[Evidence, Committee]:
    c, committee = real_pbft()
    a, b = c.preprepare(0, 3, TX), c.preprepare(0, 3, TX2)
    ev = Evidence(
        protocol="pbft",
        chain_id=committee.chain_id,
        signer=0,
        observer=2,
        first=a.encode(),
        second=b.encode(),
    )
    return ev, committee


def test_evidence_record_verifies_against_the_committee_only() -> None:
    ev, committee = make_evidence()
    again = Evidence.decode(ev.encode())
    assert "replica 0" in verify_evidence(again, committee, PBFT.messages, PBFT.evidence)
    other = Committee("another-chain", committee.members, "pbft")
    with pytest.raises(EvidenceError, match="chain"):
        verify_evidence(ev, other, PBFT.messages, PBFT.evidence)
    with pytest.raises(EvidenceError, match="no signed messages"):
        verify_evidence(ev, committee, PBFT.messages, None)
    broken = dataclasses.replace(ev, second=ev.second[:-3])
    with pytest.raises(EvidenceError, match="undecodable"):
        verify_evidence(broken, committee, PBFT.messages, PBFT.evidence)
    twice = dataclasses.replace(ev, second=ev.first)
    with pytest.raises(EvidenceError, match="same message"):
        verify_evidence(twice, committee, PBFT.messages, PBFT.evidence)


def test_store_keeps_one_file_per_pair_and_stops_at_its_bound(tmp_path: Path) -> None:
    ev, _ = make_evidence()
    store = EvidenceStore(tmp_path / "evidence", max_kept=2)
    first = store.save(ev)
    assert first is not None and first.exists()
    assert store.save(ev) is None  # the same pair again: kept once
    other = dataclasses.replace(ev, observer=3, first=ev.second, second=ev.first)
    assert store.save(other) is not None
    third = dataclasses.replace(ev, signer=1)
    assert store.save(third) is None and store.dropped == 1
    assert len(EvidenceStore(tmp_path / "evidence")) == 2  # reopened: still two
    assert not list((tmp_path / "evidence").glob("*.tmp"))
    (tmp_path / "evidence" / "junk.evidence").write_bytes(b"\xff\x00garbage")
    found = list_evidence(tmp_path / "evidence")
    assert sorted(bool(f.evidence) for f in found) == [False, True, True]
    assert any("not an evidence record" in f.error for f in found)

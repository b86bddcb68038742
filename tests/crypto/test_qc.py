"""Quorum certificates: every way a certificate can be wrong is caught."""

from __future__ import annotations

import pytest

from crypto import Committee, Domain, InvalidCertificate, QuorumCertificate, SigningKey
from crypto.codec import CodecError
from crypto.committee import byzantine_faults, byzantine_quorum, majority
from crypto.qc import bitmap_indices, make_bitmap

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
COMMITTEE = Committee("alpha", [k.public_key for k in KEYS])
DOMAIN = Domain("alpha", "pbft/commit")
PAYLOAD = b"[view 1, height 7, hash]"
STATEMENT = DOMAIN.digest(PAYLOAD)


def qc_of(signers: list[int], statement: bytes = STATEMENT) -> QuorumCertificate:
    return QuorumCertificate.from_votes(
        statement, [(i, KEYS[i].sign_digest(statement)) for i in signers], 4
    )


def verify(qc: QuorumCertificate, committee: Committee = COMMITTEE, threshold: int = 3) -> None:
    qc.verify(committee, threshold=threshold, statement=STATEMENT)


def test_valid_certificate() -> None:
    qc = qc_of([3, 0, 2])
    verify(qc)
    assert qc.signer_ids == (0, 2, 3)
    assert qc.is_valid(COMMITTEE, threshold=3, statement=STATEMENT)
    verify(QuorumCertificate.decode(qc.encode()))


def test_too_few_signers() -> None:
    with pytest.raises(InvalidCertificate, match="2 signers, 3 required"):
        verify(qc_of([0, 1]))


def test_unknown_signer_bit() -> None:
    good = qc_of([0, 1, 2])
    # Set bit 5 (no replica 5 in a committee of 4) and give it a signature.
    forged = QuorumCertificate(
        statement=STATEMENT,
        signers=bytes([good.signers[0] | 1 << 5]),
        signatures=(*good.signatures, KEYS[3].sign_digest(STATEMENT)),
    )
    with pytest.raises(InvalidCertificate, match="unknown replica"):
        verify(forged)


def test_bitmap_sized_for_another_committee() -> None:
    qc = qc_of([0, 1, 2])
    wide = QuorumCertificate(
        statement=STATEMENT, signers=qc.signers + b"\x00", signatures=qc.signatures
    )
    with pytest.raises(InvalidCertificate, match="does not fit"):
        verify(wide)


def test_signer_from_outside_the_committee() -> None:
    outsider = SigningKey(b"\x99" * 32)
    sigs = list(qc_of([0, 1, 2]).signatures)
    sigs[2] = outsider.sign_digest(STATEMENT)
    qc = QuorumCertificate(
        statement=STATEMENT, signers=make_bitmap([0, 1, 2], 4), signatures=tuple(sigs)
    )
    with pytest.raises(InvalidCertificate, match="invalid signature from replica 2"):
        verify(qc)


def test_one_replica_cannot_sign_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        QuorumCertificate.from_votes(STATEMENT, [(1, b"a" * 64), (1, b"a" * 64), (2, b"b" * 64)], 4)
    # The same signature listed for two signers only verifies for its own signer.
    sig0 = KEYS[0].sign_digest(STATEMENT)
    sig1 = KEYS[1].sign_digest(STATEMENT)
    dup = QuorumCertificate(
        statement=STATEMENT, signers=make_bitmap([0, 1, 2], 4), signatures=(sig0, sig1, sig1)
    )
    with pytest.raises(InvalidCertificate, match="replica 2"):
        verify(dup)


def test_duplicate_keys_in_a_committee_are_refused() -> None:
    # Otherwise one key holder would count as two signers.
    with pytest.raises(ValueError, match="same public key"):
        Committee("alpha", [KEYS[0].public_key, KEYS[1].public_key, KEYS[0].public_key])


def test_signatures_over_another_statement() -> None:
    other = DOMAIN.digest(b"[view 2, height 7, hash]")
    qc = qc_of([0, 1, 2], statement=other)
    with pytest.raises(InvalidCertificate, match="another statement"):
        verify(qc)
    # Relabelled with the right statement, the signatures do not verify.
    relabelled = QuorumCertificate(
        statement=STATEMENT, signers=qc.signers, signatures=qc.signatures
    )
    with pytest.raises(InvalidCertificate, match="invalid signature"):
        verify(relabelled)


def test_signatures_from_another_domain() -> None:
    for domain in (Domain("alpha", "pbft/prepare"), Domain("beta", "pbft/commit")):
        transplanted = domain.digest(PAYLOAD)
        sigs = tuple(KEYS[i].sign_digest(transplanted) for i in (0, 1, 2))
        qc = QuorumCertificate(
            statement=STATEMENT, signers=make_bitmap([0, 1, 2], 4), signatures=sigs
        )
        with pytest.raises(InvalidCertificate, match="invalid signature"):
            verify(qc)


def test_one_bad_signature_spoils_the_certificate_even_above_threshold() -> None:
    qc = qc_of([0, 1, 2, 3])
    sigs = list(qc.signatures)
    sigs[3] = bytes(64)
    bad = QuorumCertificate(statement=STATEMENT, signers=qc.signers, signatures=tuple(sigs))
    with pytest.raises(InvalidCertificate):
        verify(bad)


def test_unsigned_acknowledgements() -> None:
    acks = QuorumCertificate.unsigned(STATEMENT, [0, 2, 3], 4)
    acks.verify_acknowledgements(COMMITTEE, threshold=3, statement=STATEMENT)
    with pytest.raises(InvalidCertificate, match="no signatures"):
        verify(acks)
    with pytest.raises(InvalidCertificate, match="required"):
        QuorumCertificate.unsigned(STATEMENT, [0, 2], 4).verify_acknowledgements(
            COMMITTEE, threshold=3, statement=STATEMENT
        )


def test_signature_count_must_match_bitmap() -> None:
    with pytest.raises(CodecError, match="3 signers but 2 signatures"):
        QuorumCertificate(
            statement=STATEMENT, signers=make_bitmap([0, 1, 2], 4), signatures=(b"a" * 64,) * 2
        )


def test_bitmap_helpers() -> None:
    assert make_bitmap([0, 9], 10) == bytes([1, 2])
    assert list(bitmap_indices(bytes([0b10000001, 0b10]))) == [0, 7, 9]
    with pytest.raises(ValueError):
        make_bitmap([10], 10)


@pytest.mark.parametrize(
    "n,f,q,m",
    [
        (1, 0, 1, 1),
        (3, 0, 2, 2),
        (4, 1, 3, 3),
        (5, 1, 4, 3),
        (7, 2, 5, 4),
        (10, 3, 7, 6),
        (16, 5, 11, 9),
    ],
)
def test_quorum_sizes(n: int, f: int, q: int, m: int) -> None:
    assert byzantine_faults(n) == f
    assert byzantine_quorum(n) == q
    assert majority(n) == m


@pytest.mark.parametrize("n", range(1, 40))
def test_byzantine_quorums_intersect_in_an_honest_replica(n: int) -> None:
    f, q = byzantine_faults(n), byzantine_quorum(n)
    assert 2 * q - n >= f + 1, "two quorums must share more than f replicas"
    assert q <= n - f, "a quorum must be reachable with f replicas silent"


def test_a_known_signature_is_trusted_only_byte_for_byte() -> None:
    ours = KEYS[0].sign_digest(STATEMENT)
    # Replica 0's slot holds a signature of another statement: known or not, it is checked.
    other = KEYS[0].sign_digest(DOMAIN.digest(b"another"))
    votes = [(0, other), *[(i, KEYS[i].sign_digest(STATEMENT)) for i in (1, 2)]]
    forged = QuorumCertificate.from_votes(STATEMENT, votes, 4)
    with pytest.raises(InvalidCertificate, match="invalid signature from replica 0"):
        forged.verify(COMMITTEE, threshold=3, statement=STATEMENT, known={0: ours})
    # Its own signature in its slot is taken as known; the others are still checked.
    votes = [(0, ours), (1, KEYS[1].sign_digest(STATEMENT)), (2, other)]
    mixed = QuorumCertificate.from_votes(STATEMENT, votes, 4)
    with pytest.raises(InvalidCertificate, match="invalid signature from replica 2"):
        mixed.verify(COMMITTEE, threshold=3, statement=STATEMENT, known={0: ours})
    qc_of([0, 1, 2]).verify(COMMITTEE, threshold=3, statement=STATEMENT, known={0: ours})

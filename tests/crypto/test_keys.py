"""Ed25519 keys and domain separation."""

from __future__ import annotations

import pytest

from crypto import Domain, InvalidKey, PublicKey, SigningKey, statement_digest
from crypto.keys import check_chain_id, public_key

KEY = SigningKey(bytes(range(32)))
PAYLOAD = b"view=3 height=9"


def test_sign_verify_round_trip() -> None:
    d = Domain("alpha", "pbft/commit")
    sig = KEY.sign(d, PAYLOAD)
    assert len(sig) == 64
    assert KEY.public_key.verify(d, PAYLOAD, sig)


def test_seed_determines_key() -> None:
    assert SigningKey(bytes(range(32))).public_key == KEY.public_key
    assert SigningKey(b"\x01" * 32).public_key != KEY.public_key
    assert KEY.seed == bytes(range(32))


@pytest.mark.parametrize(
    "other",
    [
        Domain("beta", "pbft/commit"),  # another chain
        Domain("alpha", "pbft/prepare"),  # another kind of message
        Domain("alpha", "hotstuff/vote"),  # another protocol
    ],
)
def test_signature_is_bound_to_its_domain(other: Domain) -> None:
    sig = KEY.sign(Domain("alpha", "pbft/commit"), PAYLOAD)
    assert not KEY.public_key.verify(other, PAYLOAD, sig)


def test_signature_is_bound_to_payload_and_key() -> None:
    d = Domain("alpha", "k")
    sig = KEY.sign(d, PAYLOAD)
    assert not KEY.public_key.verify(d, PAYLOAD + b"x", sig)
    assert not SigningKey(b"\x02" * 32).public_key.verify(d, PAYLOAD, sig)
    bad = bytearray(sig)
    bad[5] ^= 1
    assert not KEY.public_key.verify(d, PAYLOAD, bytes(bad))
    assert not KEY.public_key.verify(d, PAYLOAD, sig[:63])


def test_domain_tag_is_unambiguous() -> None:
    # Moving bytes between the kind and the payload changes the statement.
    a = statement_digest(Domain("c", "ab"), b"c")
    b = statement_digest(Domain("c", "a"), b"bc")
    assert a != b


def test_signatures_are_deterministic() -> None:
    d = Domain("alpha", "k")
    assert KEY.sign(d, PAYLOAD) == KEY.sign(d, PAYLOAD)


SMALL_ORDER_POINTS = [
    bytes(32),  # not on the curve in canonical form used by libsodium checks
    bytes([1] + [0] * 31),  # the identity (order 1)
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),  # order 2
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),  # order 8
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),  # order 8
]


@pytest.mark.parametrize("raw", SMALL_ORDER_POINTS)
def test_small_order_public_keys_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidKey):
        PublicKey(raw)


@pytest.mark.parametrize("raw", SMALL_ORDER_POINTS + [b"", b"\x01" * 33, bytearray(32)])
def test_the_remembered_keys_refuse_what_the_point_check_refuses(raw: bytes) -> None:
    # Asked twice: a refused key is not remembered as good.
    for _ in range(2):
        with pytest.raises(InvalidKey):
            public_key(raw)


def test_a_good_key_is_checked_once_and_remembered() -> None:
    raw = SigningKey(bytes([7]) * 32).public_key.raw
    first = public_key(raw)
    assert first == PublicKey(raw) and public_key(raw) is first


@pytest.mark.parametrize("raw", [b"", b"\x01" * 31, b"\x01" * 33, "x" * 32])
def test_malformed_keys(raw: object) -> None:
    with pytest.raises(InvalidKey):
        PublicKey(raw)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        SigningKey(raw)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        PublicKey.from_hex("zz")


def test_key_id_and_repr_hide_the_seed() -> None:
    assert len(KEY.public_key.key_id) == 16
    assert KEY.seed.hex() not in repr(KEY)
    assert PublicKey.from_hex(KEY.public_key.hex()) == KEY.public_key


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "-lead", "ü", "demo\n", "\ndemo"])
def test_chain_id_rules(bad: str) -> None:
    with pytest.raises(ValueError):
        check_chain_id(bad)
    with pytest.raises(ValueError):
        Domain(bad, "kind")


@pytest.mark.parametrize("bad", ["", "Upper", "has space", "x" * 65, "client/tx\n"])
def test_domain_kind_rules(bad: str) -> None:
    with pytest.raises(ValueError):
        Domain("c", bad)

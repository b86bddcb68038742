"""The strict codec: canonical round trips, and hostile bytes that only ever raise CodecError."""

from __future__ import annotations

import contextlib
import struct
import time
import tracemalloc

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import QuorumCertificate
from crypto.codec import (
    _BUILTIN_TAGS,
    MAX_DEPTH,
    Bool,
    Bytes,
    CodecError,
    Optional,
    Record,
    RecordUnion,
    Seq,
    Text,
    UInt,
    decode_value,
    encode_value,
    record,
    wire,
)
from ledger import Block, BlockHeader, Receipt, Transaction
from tests.strategies import RECORDS

ALL_RECORDS = RecordUnion([QuorumCertificate, Transaction, BlockHeader, Block, Receipt])


def _head(major: int, n: int) -> bytes:
    """A CBOR head with argument ``n`` in its shortest form."""
    if n < 24:
        return bytes([major << 5 | n])
    for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | info]) + struct.pack(fmt, n)
    raise ValueError(n)


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_round_trip_of_every_record_type(name: str) -> None:
    @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(RECORDS[name])
    def check(value: Record) -> None:
        data = value.encode()
        back = type(value).decode(data)
        assert back == value
        assert back.encode() == data
        assert ALL_RECORDS.decode(data) == value
        assert cbor2.dumps(cbor2.loads(data), canonical=True) == data

    check()


def test_decoded_sequences_are_tuples_and_records_are_frozen() -> None:
    tx = Transaction(client=b"c", seq=1, payload=b"p", signature=b"")
    qc = QuorumCertificate(statement=b"\0" * 32, signers=b"\x03", signatures=(b"a" * 64, b"b" * 64))
    back = QuorumCertificate.decode(qc.encode())
    assert isinstance(back.signatures, tuple)
    with pytest.raises(AttributeError):
        tx.seq = 2  # type: ignore[misc]
    assert not hasattr(tx, "__dict__")


# ------------------------------------------------------------------------------ field validation


@record(tag=0x7FF0)
class Sample(Record):
    n: int = wire(UInt(1000, minimum=1))
    raw: bytes = wire(Bytes(4))
    name: str = wire(Text(8, choices=("a", "bb")))
    flag: bool = wire(Bool())
    maybe: bytes | None = wire(Optional(Bytes(max_size=3)))
    items: tuple[int, ...] = wire(Seq(UInt(9), max_len=3))


GOOD = dict(n=5, raw=b"abcd", name="a", flag=True, maybe=None, items=(1, 2))


def test_sample_round_trip() -> None:
    s = Sample(**GOOD)
    assert Sample.decode(s.encode()) == s
    assert Sample(**{**GOOD, "items": [1]}).items == (1,)


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("n", 0, "outside"),
        ("n", 1001, "outside"),
        ("n", True, "unsigned integer"),
        ("n", -1, "outside"),
        ("n", 1.0, "unsigned integer"),
        ("raw", b"abc", "expected 4 bytes"),
        ("raw", "abcd", "expected bytes"),
        ("name", "c", "not one of"),
        ("name", b"a", "expected text"),
        ("flag", 1, "boolean"),
        ("maybe", b"long", "outside"),
        ("items", (1, 2, 3, 4), "items is outside"),
        ("items", (10,), "outside"),
        ("items", 5, "sequence"),
    ],
)
def test_constructor_rejects_bad_fields_naming_the_field(
    field: str, value: object, words: str
) -> None:
    with pytest.raises(CodecError) as err:
        Sample(**{**GOOD, field: value})
    assert err.value.where.startswith(f"Sample.{field}")
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("items", "where", "words"),
    [
        ((1, True), "Sample.items[1]", "unsigned integer"),
        ([0, 1, 10], "Sample.items[2]", "outside"),
    ],
)
def test_a_bad_item_of_an_integer_array_is_named(items: object, where: str, words: str) -> None:
    with pytest.raises(CodecError) as err:
        Sample(**{**GOOD, "items": items})
    assert err.value.where == where and words in str(err.value)


def _sample_wire(**changes: object) -> list[object]:
    wire_value = Sample(**GOOD).to_wire()
    names = [name for name, _ in Sample.SCHEMA]
    for key, value in changes.items():
        wire_value[2 + names.index(key)] = value
    return wire_value


@pytest.mark.parametrize(
    "value,words",
    [
        ([0x7FF0, 1], "elements"),
        ([0x7FF1, 1, *_sample_wire()[2:]], "expected tag"),
        ([0x7FF0, 2, *_sample_wire()[2:]], "unsupported Sample version"),
        (_sample_wire(items=[1, "x"]), "Sample.items[1]"),
        (_sample_wire(n=2**64), None),
        ({"n": 1}, None),
        ([0x7FF0, 1, *_sample_wire()[2:], 0], "elements"),
        ("text", "expected an array"),
    ],
)
def test_decoding_rejects_schema_violations(value: object, words: str | None) -> None:
    try:
        data = cbor2.dumps(value, canonical=True)
    except Exception:
        pytest.skip("not encodable")
    with pytest.raises(CodecError) as err:
        Sample.decode(data)
    if words:
        assert words in str(err.value)


def test_record_union_dispatches_and_refuses_unknown_tags() -> None:
    tx = Transaction(client=b"c", seq=1, payload=b"", signature=b"")
    assert ALL_RECORDS.decode(tx.encode()) == tx
    with pytest.raises(CodecError, match="unknown record tag 999"):
        ALL_RECORDS.decode(cbor2.dumps([999, 1]))
    with pytest.raises(ValueError, match="tag"):
        RecordUnion([Transaction, Transaction])


def test_record_needs_wire_specs() -> None:
    with pytest.raises(TypeError, match="wire spec"):

        @record(tag=0x7FF2)
        class Bad(Record):
            x: int


# ------------------------------------------------------------------------------ hostile bytes


def _assert_refused(
    data: bytes, max_seconds: float = 0.5, max_bytes: int = 8 << 20, *, plain: bool = True
) -> CodecError:
    """Refused as a record (and, with ``plain``, already by the byte-level decoder), in bounded
    time and memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(CodecError) as err:
            ALL_RECORDS.decode(data)
        if plain:
            with pytest.raises(CodecError):
                decode_value(data)
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < max_seconds, f"took {elapsed:.3f}s"
    assert peak < max_bytes, f"peak memory {peak} bytes"
    return err.value


@pytest.mark.parametrize("major", [2, 3, 4, 5])
@pytest.mark.parametrize("length", [2**16, 2**31, 2**32 + 1, 2**63, 2**64 - 1])
def test_huge_declared_lengths(major: int, length: int) -> None:
    _assert_refused(_head(major, length) + b"\x00" * 16)


def test_deep_nesting_of_200_kb() -> None:
    err = _assert_refused(b"\x81" * 200_000 + b"\x00")
    assert "depth" in str(err)
    _assert_refused(b"\x9f" * 200_000)
    _assert_refused(b"\xa1\x41a" * 60_000 + b"\x00")


def test_nesting_at_the_cap_is_accepted_and_one_more_is_not() -> None:
    ok = b"\x81" * (MAX_DEPTH - 1) + b"\x00"
    decode_value(ok)
    with pytest.raises(CodecError):
        decode_value(b"\x81" * (MAX_DEPTH + 1) + b"\x00")


@pytest.mark.parametrize("tag", _BUILTIN_TAGS)
@pytest.mark.parametrize("content", [1, b"\x00" * 8, "2020-01-01T00:00:00Z", [1, 2], [b"x"]])
def test_every_builtin_tag_is_refused(tag: int, content: object) -> None:
    data = cbor2.dumps(cbor2.CBORTag(tag, content))
    _assert_refused(data)
    # ... and nested inside a record's field.
    tx = Transaction(client=b"c", seq=1, payload=b"", signature=b"").to_wire()
    nested = cbor2.dumps([tx[0], tx[1], cbor2.CBORTag(tag, content), *tx[3:]])
    _assert_refused(nested)


def test_tag_space_sweep() -> None:
    """No tag number in a wide sweep gets through, so a new cbor2 built-in cannot slip past."""
    numbers = [*range(0, 70_000, 7), *_BUILTIN_TAGS, 2**32, 2**63, 2**64 - 1]
    for number in numbers:
        for content in (1, b"\x01", [1]):
            data = cbor2.dumps(cbor2.CBORTag(number, content))
            with pytest.raises(CodecError):
                decode_value(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x9f\x01\x02\xff",  # indefinite array
        b"\xbf\x61a\x01\xff",  # indefinite map
        b"\x5f\x41a\x41b\xff",  # indefinite byte string
        b"\x7f\x61a\x61b\xff",  # indefinite text string
        b"\x82\x9f\xff\x01",  # indefinite inside
    ],
)
def test_indefinite_lengths(data: bytes) -> None:
    _assert_refused(data)


def test_duplicate_map_keys() -> None:
    err = _assert_refused(b"\xa2\x61a\x01\x61a\x02")
    assert "Duplicate" in str(err) or "duplicate" in str(err)


@pytest.mark.parametrize(
    "data,words",
    [
        (b"\x01\x00", "trailing"),
        (
            Transaction(client=b"c", seq=1, payload=b"", signature=b"").encode() + b"\x00",
            "trailing",
        ),
        (b"\x18\x01", "canonical"),  # 1 in a two-byte form
        (b"\x19\x00\x01", "canonical"),
        (b"\x98\x01\x00", "canonical"),  # array length in a longer form
        (b"\x58\x01\x00", "canonical"),  # bytes length in a longer form
        (b"\x62\xff\xfe", None),  # invalid UTF-8
        (b"", "empty"),
        (b"\x82\x01", None),  # truncated
    ],
)
def test_malformed_or_non_canonical(data: bytes, words: str | None) -> None:
    err = _assert_refused(data)
    if words:
        assert words in str(err)


@pytest.mark.parametrize(
    "item",
    [
        b"\xfa\x3f\x80\x00\x00",  # a float
        b"\xf9\x3c\x00",  # a half float
        b"\x20",  # a negative integer
        b"\xf7",  # undefined
        b"\xe0",  # a simple value
        b"\xa1\x61a\x01",  # a map
    ],
)
def test_well_formed_values_outside_the_profile_are_refused_by_records(item: bytes) -> None:
    # Alone, and in place of a transaction's sequence number.
    _assert_refused(item, plain=False)
    tx = Transaction(client=b"c", seq=1, payload=b"", signature=b"").encode()
    # tx = [0x12, 1, h'63', seq, h'', h''] -> swap the seq byte (0x01) for the item.
    seq_at = tx.index(b"\x41c") + 2
    assert tx[seq_at] == 1
    err = _assert_refused(tx[:seq_at] + item + tx[seq_at + 1 :], plain=False)
    assert "Transaction.seq" in str(err) or "not canonical" in str(err)


def test_size_cap_is_checked_before_parsing() -> None:
    big = cbor2.dumps(b"\x00" * 2000)
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode_value(big, max_size=1000)
    with pytest.raises(CodecError, match="expected bytes"):
        decode_value("text")  # type: ignore[arg-type]


def test_value_sharing_tags_cannot_build_cycles() -> None:
    shared = cbor2.dumps([1, 2], value_sharing=True)
    cyclic = []
    cyclic.append(cyclic)
    for data in (shared, cbor2.dumps(cyclic, value_sharing=True)):
        with pytest.raises(CodecError):
            decode_value(data)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_codec_error(data: bytes) -> None:
    try:
        value = decode_value(data)
    except CodecError:
        return
    assert encode_value(value) == data
    with contextlib.suppress(CodecError):
        ALL_RECORDS.from_wire(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RECORDS["Block"], st.data())
def test_mutated_encodings_are_refused_or_canonical(block: Block, data: st.DataObject) -> None:
    raw = bytearray(block.encode())
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if kind == "flip":
        raw[pos] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    elif kind == "insert":
        raw.insert(pos, data.draw(st.integers(min_value=0, max_value=255)))
    elif kind == "delete":
        del raw[pos]
    else:
        del raw[pos:]
    try:
        back = ALL_RECORDS.decode(bytes(raw))
    except CodecError:
        return
    # A mutation that still decodes must describe a different, canonical value.
    assert back.encode() == bytes(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=0, max_value=2**64 - 1)
        | st.binary(max_size=20)
        | st.text(max_size=10),
        lambda children: st.lists(children, max_size=5),
        max_leaves=40,
    )
)
def test_plain_values_round_trip(value: object) -> None:
    data = encode_value(value)
    assert encode_value(decode_value(data)) == data


# ------------------------------------------------------------------------------ the fast path


def _generic_tx(data: bytes) -> Transaction | None:
    try:
        return Record.decode.__func__(Transaction, data)  # type: ignore[attr-defined]
    except CodecError:
        return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RECORDS["Transaction"], st.data())
def test_fast_transaction_decoding_agrees_with_the_strict_decoder(
    tx: Transaction, data: st.DataObject
) -> None:
    """The hand-written parser on admission's hot path accepts exactly what the generic strict
    decoder accepts, with the same fields, on valid encodings and on mutations of them."""
    from ledger.tx import parse_transaction

    raw = bytearray(tx.encode())
    assert parse_transaction(bytes(raw)) == (tx.client, tx.seq, tx.payload, tx.signature)
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if kind == "flip":
        raw[pos] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    elif kind == "insert":
        raw.insert(pos, data.draw(st.integers(min_value=0, max_value=255)))
    elif kind == "delete":
        del raw[pos]
    elif kind == "truncate":
        del raw[pos:]
    else:
        raw += b"\x00"
    mutated = bytes(raw)
    fast = parse_transaction(mutated)
    generic = _generic_tx(mutated)
    if generic is None:
        assert fast is None, f"fast path accepted what the strict decoder refuses: {mutated.hex()}"
        with pytest.raises(CodecError):
            Transaction.decode(mutated)
    else:
        assert fast == (generic.client, generic.seq, generic.payload, generic.signature)
        assert Transaction.decode(mutated) == generic


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("8612015801") + b"c" + b"\x00\x40\x40",  # client length 1 in a longer form
        bytes.fromhex("86120141631800") + b"\x40\x40",  # seq 0 in a two-byte form
        bytes.fromhex("861201416300") + b"\x40" + b"\x58\x40" + b"s" * 64,  # signed, short client
        bytes.fromhex("861202416300") + b"\x40\x40",  # version 2
        bytes.fromhex("861201416300") + b"\x40\x41\x00",  # a one-byte signature
        bytes.fromhex("8612014163190005") + b"\x40\x40",  # seq 5 in a three-byte form
        bytes.fromhex("86120141631a0000ffff") + b"\x40\x40",  # seq 65535 in a five-byte form
        bytes.fromhex("86120141631b00000000ffffffff") + b"\x40\x40",  # 2**32 - 1, nine bytes
        bytes.fromhex("86120141631b000000"),  # cut inside a nine-byte sequence number
        bytes.fromhex("861201416300590003") + b"abc\x40",  # payload length in a long form
        bytes.fromhex("8612015803") + b"abc\x00\x40\x40",  # client length in a long form
        bytes.fromhex("86120141630040580301") + b"\x02\x03",  # signature length, long form
        bytes.fromhex("86120141630040"),  # no signature field
        bytes.fromhex("8612014163195dc0"),  # cut inside the sequence number's head
    ],
)
def test_fast_path_refuses_what_the_strict_decoder_refuses(raw: bytes) -> None:
    from ledger.tx import parse_transaction

    assert parse_transaction(raw) is None
    with pytest.raises(CodecError):
        Transaction.decode(raw)


@pytest.mark.parametrize("seq", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
@pytest.mark.parametrize("client_size", [1, 23, 24, 32])
@pytest.mark.parametrize("payload_size", [0, 23, 24, 255, 256, 65535, 65536])
def test_fast_path_reads_every_head_length_at_its_boundaries(
    seq: int, client_size: int, payload_size: int
) -> None:
    from ledger.tx import parse_transaction

    client = bytes(range(1, client_size + 1))
    signature = b"s" * 64 if client_size == 32 else b""
    raw = Transaction(client=client, seq=seq, payload=b"p" * payload_size, signature=signature)
    encoded = raw.encode()
    assert parse_transaction(encoded) == (client, seq, b"p" * payload_size, signature)
    assert _generic_tx(encoded) == raw


def _outcome(make: object) -> bytes | str:
    try:
        return make()  # type: ignore[operator,no-any-return]
    except CodecError as exc:
        return f"CodecError: {exc}"


@settings(max_examples=400, deadline=None)
@given(
    client=st.one_of(st.binary(max_size=40), st.text(max_size=3)),
    seq=st.one_of(st.integers(min_value=-2, max_value=2**64 + 2), st.booleans()),
    payload=st.one_of(st.binary(max_size=300), st.builds(bytearray, st.binary(max_size=4))),
    signature=st.one_of(st.binary(max_size=70), st.sampled_from([b"s" * 64, b"s" * 63])),
)
def test_encoding_a_transaction_without_the_record_gives_the_records_bytes_or_error(
    client: object, seq: object, payload: object, signature: object
) -> None:
    from ledger.tx import encode_transaction

    record = _outcome(
        lambda: Transaction(
            client=client,  # type: ignore[arg-type]
            seq=seq,  # type: ignore[arg-type]
            payload=payload,  # type: ignore[arg-type]
            signature=signature,  # type: ignore[arg-type]
        ).encode()
    )
    direct = _outcome(lambda: encode_transaction(client, seq, payload, signature))  # type: ignore[arg-type]
    assert direct == record


def test_encoding_a_transaction_refuses_a_payload_over_the_formats_limit() -> None:
    from ledger.tx import MAX_PAYLOAD, encode_transaction

    encode_transaction(b"c", 1, bytes(MAX_PAYLOAD))
    with pytest.raises(CodecError, match=r"Transaction\.payload"):
        encode_transaction(b"c", 1, bytes(MAX_PAYLOAD + 1))


def test_a_signed_encoding_is_the_signed_records() -> None:
    from crypto import SigningKey
    from ledger.tx import encode_signed

    key = SigningKey(bytes(range(32)))
    for seq, payload in ((1, b""), (2**40, b"x" * 300)):
        raw = encode_signed(key, "chain", seq, payload)
        assert raw == Transaction.signed(key, "chain", seq, payload).encode()
        assert Transaction.decode(raw).verify_signature("chain")

"""Property-based fuzzing of what a replica parses from the network before anything else: the
frame parser and the strict CBOR decoder with the message unions of every port.

Hypothesis generates arbitrary CBOR *structures* (nested arrays and maps, tags, floats, simple
values, indefinite lengths, huge declared sizes) as well as raw bytes and mutations of valid
messages, so the search reaches past the first byte. The contract: a frame or a message is
either accepted or refused with :class:`FrameError` / :class:`CodecError`; nothing else is
raised, and the parser never buffers more than one frame's cap.

The default run uses Hypothesis' default example count. A long run (documented in
docs/reliability.md)::

    BFT_FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest tests/network/test_fuzz.py -p no:randomly
"""

from __future__ import annotations

import contextlib
import os
import struct

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bft.client.protocol import TO_CLIENT, TO_REPLICA
from bft.protocols import available, spec
from crypto.codec import CodecError
from network.framing import HEADER, FrameDecoder, FrameError, encode_frame

EXAMPLES = int(os.environ.get("BFT_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(
    max_examples=EXAMPLES or 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

UNIONS = {"to replica (client port)": TO_REPLICA, "to client": TO_CLIENT}
UNIONS.update({f"{p} peer messages": spec(p).messages for p in available()})

scalars = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.binary(max_size=64),
    st.text(max_size=16),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
)
cbor_items = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.integers(0, 20), st.text(max_size=4)), inner, max_size=4),
        st.builds(cbor2.CBORTag, st.integers(0, 2**16), inner),
    ),
    max_leaves=30,
)
raw_heads = st.sampled_from(
    [
        b"\x9f",  # indefinite array
        b"\xbf",  # indefinite map
        b"\x5f",  # indefinite bytes
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # array of 2**64 - 1
        b"\x5b\x00\x00\x00\x01\x00\x00\x00\x00",  # 4 GiB of bytes
        b"\xc1",  # a tag
        b"\x81" * 300,  # deep nesting
        b"\xa2\x01\x01\x01",  # duplicate key start
        b"\xf7",  # undefined
        b"\x1c",  # reserved
    ]
)


def _decode_everywhere(data: bytes) -> None:
    for union in UNIONS.values():
        with contextlib.suppress(CodecError):
            union.decode(data)


@FUZZ
@given(cbor_items)
def test_arbitrary_cbor_structures_decode_or_raise_codec_error(item: object) -> None:
    try:
        data = cbor2.dumps(item)
    except (TypeError, ValueError, OverflowError):
        return
    _decode_everywhere(data)
    _decode_everywhere(data + b"\x00")  # trailing bytes


@FUZZ
@given(st.lists(st.one_of(raw_heads, st.binary(max_size=40)), max_size=8))
def test_hostile_byte_patterns_decode_or_raise_codec_error(parts: list[bytes]) -> None:
    _decode_everywhere(b"".join(parts))


@FUZZ
@given(st.integers(0, 5), st.lists(cbor_items, min_size=1, max_size=6), st.data())
def test_valid_looking_messages_with_mutations(
    tag: int, fields: list[object], data: st.DataObject
) -> None:
    """A message's outer shape (``[tag, version, ...fields]``) with arbitrary fields, then bytes
    flipped, cut or inserted."""
    try:
        encoded = bytearray(cbor2.dumps([tag, 1, *fields]))
    except (TypeError, ValueError, OverflowError):
        return
    for _ in range(data.draw(st.integers(0, 3))):
        where = data.draw(st.integers(0, max(0, len(encoded) - 1)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and encoded:
            encoded[where] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del encoded[where:]
        else:
            encoded[where:where] = data.draw(st.binary(min_size=1, max_size=9))
    _decode_everywhere(bytes(encoded))


@FUZZ
@given(st.binary(max_size=4096), st.integers(1, 64), st.integers(8, 2048))
def test_the_frame_parser_refuses_or_frames_and_never_buffers_past_its_cap(
    stream: bytes, chunk: int, cap: int
) -> None:
    decoder = FrameDecoder(max_frame=cap)
    out: list[bytes] = []
    try:
        for i in range(0, len(stream), chunk):
            out += decoder.feed(stream[i : i + chunk])
            assert decoder.buffered <= cap + HEADER.size + chunk
    except FrameError:
        return
    assert all(len(frame) <= cap for frame in out)
    # Whatever it framed is exactly a prefix of the stream.
    assert b"".join(encode_frame(f) for f in out) == stream[: sum(4 + len(f) for f in out)]


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(16, 4096))
def test_an_announced_length_over_the_cap_is_refused_from_the_header_alone(
    length: int, cap: int
) -> None:
    decoder = FrameDecoder(max_frame=cap)
    header = struct.pack(">I", length)
    if length > cap:
        try:
            decoder.feed(header)
        except FrameError:
            return
        raise AssertionError("an oversized length was accepted")
    assert decoder.feed(header) == ([b""] if length == 0 else [])

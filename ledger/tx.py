"""Transactions: what clients submit and the ledger orders.

A transaction is the client's identity, its sequence number, an opaque payload and an optional
Ed25519 signature. ``(client, seq)`` identifies a request, so a retried request can be recognised
and committed once. When signed, ``client`` is the client's 32-byte public key and the signature
covers ``[client, seq, payload]`` in the domain ``(chain id, "client/tx")``.

Blocks carry transactions as their canonical encodings (opaque byte strings); a transaction's id
is the RFC 6962 leaf hash of that encoding, ``SHA-256(0x00 || encoding)``, which is also its leaf
in the block's Merkle tree.
"""

from __future__ import annotations

import functools
from typing import Any

from crypto import SigningKey, leaf_hash
from crypto.codec import MAX_INPUT_SIZE, Bytes, CodecError, Record, UInt, encode_value, record, wire
from crypto.errors import InvalidKey
from crypto.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Domain, public_key

TX_TAG = 0x12
TX_DOMAIN_KIND = "client/tx"
MAX_CLIENT_ID = 32
MAX_PAYLOAD = 4 * 1024 * 1024
"""Largest payload the format allows; deployments set a smaller admission limit."""
_MAX_UINT = 2**64 - 1


@functools.lru_cache(maxsize=64)
def tx_domain(chain_id: str) -> Domain:
    return Domain(chain_id, TX_DOMAIN_KIND)


@record(tag=TX_TAG)
class Transaction(Record):
    client: bytes = wire(Bytes(min_size=1, max_size=MAX_CLIENT_ID))
    seq: int = wire(UInt())
    payload: bytes = wire(Bytes(max_size=MAX_PAYLOAD))
    signature: bytes = wire(Bytes(max_size=SIGNATURE_SIZE))

    def _check(self) -> None:
        if self.signature:
            if len(self.signature) != SIGNATURE_SIZE:
                raise CodecError("a signature is 64 bytes or absent", "Transaction.signature")
            if len(self.client) != PUBLIC_KEY_SIZE:
                raise CodecError(
                    "a signed transaction's client is its 32-byte public key", "Transaction.client"
                )

    @classmethod
    def signed(cls, key: SigningKey, chain_id: str, seq: int, payload: bytes) -> Transaction:
        """A transaction signed by ``key``; its client id is the key's public key."""
        client = key.public_key.raw
        return cls(
            client=client,
            seq=seq,
            payload=payload,
            signature=_client_signature(key, chain_id, client, seq, payload),
        )

    @property
    def request_id(self) -> tuple[bytes, int]:
        """``(client, seq)``: what deduplication keys on."""
        return (self.client, self.seq)

    @property
    def is_signed(self) -> bool:
        return bool(self.signature)

    def signing_digest(self, chain_id: str) -> bytes:
        return tx_domain(chain_id).digest(encode_value([self.client, self.seq, self.payload]))

    def verify_signature(self, chain_id: str) -> bool:
        """True when the transaction carries a valid signature by its client for ``chain_id``."""
        if not self.signature:
            return False
        try:
            key = public_key(self.client)
        except InvalidKey:
            return False
        return key.verify_digest(self.signing_digest(chain_id), self.signature)

    def txid(self) -> bytes:
        return leaf_hash(self.encode())

    def to_wire(self) -> list[Any]:
        return [TX_TAG, 1, self.client, self.seq, self.payload, self.signature]

    @classmethod
    def decode(
        cls, data: bytes | bytearray | memoryview, *, max_size: int = MAX_INPUT_SIZE
    ) -> Transaction:
        """Decode a transaction: the hot path of admission. A canonical encoding is parsed
        directly (:func:`parse_transaction`); anything else goes through the generic strict
        decoder, which refuses it with the reason."""
        if type(data) is bytes and len(data) <= max_size:
            fields = parse_transaction(data)
            if fields is not None:
                tx = object.__new__(cls)
                setter = object.__setattr__
                setter(tx, "client", fields[0])
                setter(tx, "seq", fields[1])
                setter(tx, "payload", fields[2])
                setter(tx, "signature", fields[3])
                return tx
        # (Record.decode by name: a slotted dataclass is rebuilt, so super() would not find it.)
        return Record.decode.__func__(cls, data, max_size=max_size)  # type: ignore[attr-defined]


def encode_transaction(client: bytes, seq: int, payload: bytes, signature: bytes = b"") -> bytes:
    """``Transaction(client=..., seq=..., payload=..., signature=...).encode()`` without building
    the record (a client encodes one per request: a third of the cost). Whatever the record
    refuses raises the same :class:`CodecError`, from the record itself."""
    if (
        type(client) is bytes
        and 1 <= len(client) <= MAX_CLIENT_ID
        and type(seq) is int
        and 0 <= seq <= _MAX_UINT
        and type(payload) is bytes
        and len(payload) <= MAX_PAYLOAD
        and type(signature) is bytes
        and (not signature or (len(signature) == SIGNATURE_SIZE and len(client) == PUBLIC_KEY_SIZE))
    ):
        return encode_value([TX_TAG, Transaction.VERSION, client, seq, payload, signature])
    return Transaction(client=client, seq=seq, payload=payload, signature=signature).encode()


def encode_signed(key: SigningKey, chain_id: str, seq: int, payload: bytes) -> bytes:
    """``Transaction.signed(key, chain_id, seq, payload).encode()`` without building the record."""
    client = key.public_key.raw
    signature = _client_signature(key, chain_id, client, seq, payload)
    return encode_transaction(client, seq, payload, signature)


def _client_signature(
    key: SigningKey, chain_id: str, client: bytes, seq: int, payload: bytes
) -> bytes:
    return key.sign(tx_domain(chain_id), encode_value([client, seq, payload]))


class _NotCanonical(Exception):
    pass


def _head(raw: bytes, pos: int, major: int) -> tuple[int, int]:
    """The argument of the canonical CBOR head of ``major`` at ``pos``, and the position after."""
    initial = raw[pos]
    if initial >> 5 != major:
        raise _NotCanonical
    info = initial & 0x1F
    if info < 24:
        return info, pos + 1
    if info == 24:
        value = raw[pos + 1]
        if value < 24:
            raise _NotCanonical
        return value, pos + 2
    if info == 25:
        value = int.from_bytes(raw[pos + 1 : pos + 3], "big")
        if value < 256:
            raise _NotCanonical
        return value, pos + 3
    if info == 26:
        value = int.from_bytes(raw[pos + 1 : pos + 5], "big")
        if value < 65536:
            raise _NotCanonical
        return value, pos + 5
    if info == 27:
        value = int.from_bytes(raw[pos + 1 : pos + 9], "big")
        if value < 2**32:
            raise _NotCanonical
        return value, pos + 9
    raise _NotCanonical


def parse_transaction(raw: bytes) -> tuple[bytes, int, bytes, bytes] | None:
    """``(client, seq, payload, signature)`` when ``raw`` is exactly the canonical encoding of a
    valid :class:`Transaction`, else ``None``.

    It accepts precisely what the strict decoder accepts for this record (shortest heads, the
    field bounds, no trailing bytes); tests check the two agree on valid and mutated inputs.
    """
    if len(raw) < 8 or raw[0] != 0x86 or raw[1] != TX_TAG or raw[2] != 0x01:
        return None
    # Once per transaction on every replica: the usual heads (byte strings below 64 KiB, any
    # sequence number) are read inline, the rest through ``_head`` (a call per head took
    # 0.3-0.5 us, more than half of the parse).
    try:
        head = raw[3]
        if 0x40 < head < 0x58:
            start, pos = 4, head - 0x3C
        elif head == 0x58:  # a public key
            if raw[4] < 24:
                raise _NotCanonical
            start, pos = 5, 5 + raw[4]
        else:
            length, start = _head(raw, 3, 2)
            pos = start + length
        client = raw[start:pos]
        head = raw[pos]
        if head < 24:
            seq = head
            pos += 1
        elif head == 0x19:
            seq = raw[pos + 1] << 8 | raw[pos + 2]
            if seq < 256:
                raise _NotCanonical
            pos += 3
        elif head == 0x1A:
            seq = raw[pos + 1] << 24 | raw[pos + 2] << 16 | raw[pos + 3] << 8 | raw[pos + 4]
            if seq < 65536:
                raise _NotCanonical
            pos += 5
        elif head == 0x1B:  # a signing client numbers from the clock in microseconds
            seq = int.from_bytes(raw[pos + 1 : pos + 9], "big")
            if seq <= 0xFFFFFFFF or pos + 9 > len(raw):
                raise _NotCanonical
            pos += 9
        else:
            seq, pos = _head(raw, pos, 0)
        head = raw[pos]
        if head == 0x59:
            length = raw[pos + 1] << 8 | raw[pos + 2]
            if length < 256:
                raise _NotCanonical
            start = pos + 3
        elif 0x40 <= head < 0x58:
            length, start = head - 0x40, pos + 1
        else:
            length, start = _head(raw, pos, 2)
        pos = start + length
        payload = raw[start:pos]
        head = raw[pos]
        if head == 0x40:
            signature = b""
            pos += 1
        elif head == 0x58:
            length = raw[pos + 1]
            if length < 24:
                raise _NotCanonical
            signature = raw[pos + 2 : pos + 2 + length]
            pos += 2 + length
        else:
            length, start = _head(raw, pos, 2)
            pos = start + length
            signature = raw[start:pos]
    except (_NotCanonical, IndexError):
        return None
    if pos != len(raw) or not 1 <= len(client) <= MAX_CLIENT_ID or len(payload) > MAX_PAYLOAD:
        return None
    if signature and (len(signature) != SIGNATURE_SIZE or len(client) != PUBLIC_KEY_SIZE):
        return None
    return client, seq, payload, signature


def looks_signed(encoded: bytes) -> bool:
    """A cheap test on an encoded transaction: does it end with a 64-byte signature? (A false
    positive only costs a decode; an unsigned transaction ends with an empty byte string.)"""
    return encoded[-66:-64] == b"\x58\x40"


RECENT_TXIDS = 4_096
"""Transaction ids remembered by :func:`txid_of`: a few blocks' worth."""
REMEMBERED_TX_BYTES = 1_024
"""Only the ids of transactions up to this size are remembered (the cache holds the encodings:
at most 4,096 x 1 KiB)."""


def txid_of(encoded: bytes) -> bytes:
    """The id of an encoded transaction: its Merkle leaf hash.

    A replica asks for the id of a signed transaction in several places (the signature checks
    under way, the verified cache, the core's own), each time with the same bytes object, whose
    hash Python keeps: the ids of recent small transactions are remembered rather than hashed
    again (0.7 us each for 256 B).
    """
    if type(encoded) is bytes and len(encoded) <= REMEMBERED_TX_BYTES:
        return _recent_txid(encoded)
    return leaf_hash(encoded)


@functools.lru_cache(maxsize=RECENT_TXIDS)
def _recent_txid(encoded: bytes) -> bytes:
    return leaf_hash(encoded)

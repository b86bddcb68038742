"""Hypothesis strategies for every record type, shared by the test suites."""

from __future__ import annotations

from hypothesis import strategies as st

from crypto import QuorumCertificate
from crypto.qc import make_bitmap
from ledger import PROTOCOLS, Block, BlockHeader, Receipt, Transaction, make_header

digests = st.binary(min_size=32, max_size=32)
chain_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
u64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    signed = draw(st.booleans())
    client = draw(
        st.binary(min_size=32, max_size=32) if signed else st.binary(min_size=1, max_size=32)
    )
    return Transaction(
        client=client,
        seq=draw(u64),
        payload=draw(st.binary(max_size=300)),
        signature=draw(st.binary(min_size=64, max_size=64)) if signed else b"",
    )


@st.composite
def certificates(draw: st.DrawFn, n: int | None = None) -> QuorumCertificate:
    n = n or draw(st.integers(min_value=1, max_value=40))
    signers = draw(st.sets(st.integers(min_value=0, max_value=n - 1), min_size=1))
    signed = draw(st.booleans())
    sigs = tuple(draw(st.binary(min_size=64, max_size=64)) for _ in signers) if signed else ()
    return QuorumCertificate(
        statement=draw(digests), signers=make_bitmap(signers, n), signatures=sigs
    )


@st.composite
def headers(draw: st.DrawFn) -> BlockHeader:
    return BlockHeader(
        chain_id=draw(chain_ids),
        height=draw(st.integers(min_value=1, max_value=2**64 - 1)),
        prev_hash=draw(digests),
        tx_root=draw(digests),
        tx_count=draw(st.integers(min_value=0, max_value=1000)),
        protocol=draw(st.sampled_from(PROTOCOLS)),
        view=draw(u64),
        proposer=draw(st.integers(min_value=0, max_value=1023)),
    )


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    txs = [t.encode() for t in draw(st.lists(transactions(), max_size=6))]
    header = make_header(
        chain_id=draw(chain_ids),
        height=draw(st.integers(min_value=1, max_value=10**9)),
        prev_hash=draw(digests),
        txs=txs,
        protocol=draw(st.sampled_from(PROTOCOLS)),
        view=draw(u64),
        proposer=draw(st.integers(min_value=0, max_value=9)),
    )
    return Block(header=header, txs=tuple(txs), certificate=draw(certificates()))


@st.composite
def receipts(draw: st.DrawFn) -> Receipt:
    header = draw(headers().filter(lambda h: h.tx_count > 0))
    return Receipt(
        header=header,
        certificate=draw(certificates()),
        tx=draw(transactions()).encode(),
        index=draw(st.integers(min_value=0, max_value=header.tx_count - 1)),
        path=tuple(draw(st.lists(digests, max_size=12))),
    )


RECORDS = {
    "Transaction": transactions(),
    "QuorumCertificate": certificates(),
    "BlockHeader": headers(),
    "Block": blocks(),
    "Receipt": receipts(),
}

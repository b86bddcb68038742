"""Blocks: header, transactions, certificate; the hash chain and the commit statement.

* The block hash is ``SHA-256`` of the canonical encoding of the header. Transactions enter it
  through the header's Merkle root; the certificate is not part of it (it signs it).
* Heights start at 1. The block at height 1 links to the *genesis hash* of its chain,
  ``SHA-256(encode(["bft-genesis", 1, chain_id]))``, so the chain id alone defines genesis.
* A block's certificate is a :class:`~crypto.QuorumCertificate` over the *commit statement*
  ``[protocol, view, height, block_hash]`` in the domain ``(chain_id, "block/commit")``. In the BFT
  modes it carries a Byzantine quorum (2f+1 of 3f+1) of signatures; in Raft mode it is an unsigned
  set naming the majority that stored the block.

The exact bytes are specified in ``docs/ledger-format.md``.
"""

from __future__ import annotations

from crypto import EMPTY_ROOT, MAX_COMMITTEE, QuorumCertificate, merkle_root, sha256
from crypto.codec import (
    Bytes,
    CodecError,
    Nested,
    Record,
    Seq,
    Text,
    UInt,
    encode_value,
    record,
    wire,
)
from crypto.committee import PROTOCOLS
from crypto.hashing import DIGEST_SIZE
from crypto.keys import Domain, check_chain_id

from .tx import MAX_PAYLOAD

HEADER_TAG = 0x10
BLOCK_TAG = 0x11

COMMIT_DOMAIN_KIND = "block/commit"

MAX_BLOCK_TXS = 100_000
MAX_TX_SIZE = MAX_PAYLOAD + 256
"""Largest encoded transaction: the largest payload plus its envelope."""


def genesis_hash(chain_id: str) -> bytes:
    """The hash that the block at height 1 links to."""
    return sha256(encode_value(["bft-genesis", 1, check_chain_id(chain_id)]))


def commit_domain(chain_id: str) -> Domain:
    return Domain(chain_id, COMMIT_DOMAIN_KIND)


@record(tag=HEADER_TAG)
class BlockHeader(Record):
    chain_id: str = wire(Text(64, min_len=1))
    height: int = wire(UInt(minimum=1))
    prev_hash: bytes = wire(Bytes(DIGEST_SIZE))
    tx_root: bytes = wire(Bytes(DIGEST_SIZE))
    tx_count: int = wire(UInt(MAX_BLOCK_TXS))
    protocol: str = wire(Text(choices=PROTOCOLS))
    view: int = wire(UInt())
    proposer: int = wire(UInt(MAX_COMMITTEE - 1))

    def _check(self) -> None:
        try:
            check_chain_id(self.chain_id)
        except ValueError as exc:
            raise CodecError(str(exc), "BlockHeader.chain_id") from None

    def hash(self) -> bytes:
        """The block hash: SHA-256 of this header's canonical encoding."""
        return sha256(self.encode())

    def commit_payload(self, block_hash: bytes | None = None) -> bytes:
        """What a certificate for this block signs, in :func:`commit_domain`."""
        if block_hash is None:
            block_hash = self.hash()
        return encode_value([self.protocol, self.view, self.height, block_hash])

    def commit_statement(self, block_hash: bytes | None = None) -> bytes:
        """The statement digest that this block's certificate must be over."""
        return commit_domain(self.chain_id).digest(self.commit_payload(block_hash))


@record(tag=BLOCK_TAG)
class Block(Record):
    header: BlockHeader = wire(Nested(BlockHeader))
    txs: tuple[bytes, ...] = wire(
        Seq(Bytes(min_size=1, max_size=MAX_TX_SIZE), max_len=MAX_BLOCK_TXS)
    )
    certificate: QuorumCertificate = wire(Nested(QuorumCertificate))

    def _check(self) -> None:
        if len(self.txs) != self.header.tx_count:
            raise CodecError(
                f"header says {self.header.tx_count} transactions, block has {len(self.txs)}",
                "Block.txs",
            )

    @property
    def height(self) -> int:
        return self.header.height

    def hash(self) -> bytes:
        return self.header.hash()

    def computed_root(self) -> bytes:
        return merkle_root(self.txs)


def make_header(
    *,
    chain_id: str,
    height: int,
    prev_hash: bytes,
    txs: tuple[bytes, ...] | list[bytes],
    protocol: str,
    view: int,
    proposer: int,
) -> BlockHeader:
    """A header for ``txs``, with its Merkle root and count computed."""
    return BlockHeader(
        chain_id=chain_id,
        height=height,
        prev_hash=prev_hash,
        tx_root=merkle_root(txs) if txs else EMPTY_ROOT,
        tx_count=len(txs),
        protocol=protocol,
        view=view,
        proposer=proposer,
    )

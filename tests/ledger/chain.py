"""Building real certified chains for the ledger tests."""

from __future__ import annotations

import random

from crypto import Committee, QuorumCertificate, SigningKey
from ledger import Block, Transaction, genesis_hash, make_header

CHAIN = "testchain"
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
COMMITTEE = Committee(CHAIN, [k.public_key for k in KEYS])
RAFT_COMMITTEE = Committee(CHAIN, [k.public_key for k in KEYS], "raft")
CLIENT = SigningKey(b"\x77" * 32)


def certify(header, signers=(0, 1, 2), keys=KEYS, statement=None, unsigned=False):  # type: ignore[no-untyped-def]
    st = statement if statement is not None else header.commit_statement()
    if unsigned:
        return QuorumCertificate.unsigned(st, signers, len(keys))
    return QuorumCertificate.from_votes(
        st, [(i, keys[i].sign_digest(st)) for i in signers], len(keys)
    )


def make_txs(rng: random.Random, count: int, height: int, signed_every: int = 4) -> list[bytes]:
    out = []
    for i in range(count):
        seq = height * 10_000 + i
        payload = rng.randbytes(rng.randrange(1, 120))
        if signed_every and i % signed_every == 0:
            tx = Transaction.signed(CLIENT, CHAIN, seq, payload)
        else:
            tx = Transaction(client=b"client-%d" % (i % 3), seq=seq, payload=payload, signature=b"")
        out.append(tx.encode())
    return out


def build_chain(
    count: int,
    *,
    seed: int = 7,
    txs_per_block: int | tuple[int, int] = (0, 12),
    protocol: str = "pbft",
    start_height: int = 1,
    prev_hash: bytes | None = None,
) -> list[Block]:
    """``count`` certified blocks continuing from ``prev_hash`` (genesis by default)."""
    rng = random.Random(seed)
    prev = prev_hash if prev_hash is not None else genesis_hash(CHAIN)
    out = []
    for height in range(start_height, start_height + count):
        n = txs_per_block if isinstance(txs_per_block, int) else rng.randint(*txs_per_block)
        txs = make_txs(rng, n, height)
        header = make_header(
            chain_id=CHAIN,
            height=height,
            prev_hash=prev,
            txs=txs,
            protocol=protocol,
            view=height // 5,
            proposer=height % 4,
        )
        cert = certify(header, unsigned=protocol == "raft")
        block = Block(header=header, txs=tuple(txs), certificate=cert)
        out.append(block)
        prev = header.hash()
    return out

"""A ledger demonstration: what a committee's output looks like, built and checked end to end.

It makes a committee's keys, lets a few clients sign transactions, cuts them into blocks, has a
Byzantine quorum of the replicas sign each block's commit statement (real Ed25519), appends the
blocks to a real store with group commit, then verifies the whole chain against the committee file
and checks a receipt offline. No consensus protocol runs here: this exercises the ledger, the
certificates and the tools that audit them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crypto import Committee, QuorumCertificate, SigningKey
from crypto.keyfiles import load_committee, write_committee, write_secret_key
from ledger import Block, Transaction, genesis_hash, make_header, txid_of
from ledger.store import LedgerStore


@dataclass(frozen=True, slots=True)
class DemoResult:
    ledger_dir: Path
    committee_file: Path
    height: int
    transactions: int
    signed_transactions: int
    sample_txid: bytes
    seconds_appending: float


def make_keys(directory: Path, chain_id: str, n: int) -> tuple[list[SigningKey], Path]:
    """Write ``n`` replica keys and the committee file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = [SigningKey.generate() for _ in range(n)]
    for i, key in enumerate(keys):
        write_secret_key(
            directory / f"replica-{i}.key", key, chain_id=chain_id, role="replica", id=i
        )
    committee_file = directory / "committee.toml"
    write_committee(committee_file, Committee(chain_id, [k.public_key for k in keys]))
    return keys, committee_file


def certify(
    block_header_statement: bytes, keys: list[SigningKey], signers: list[int]
) -> QuorumCertificate:
    votes = [(i, keys[i].sign_digest(block_header_statement)) for i in signers]
    return QuorumCertificate.from_votes(block_header_statement, votes, len(keys))


def run_demo(
    directory: Path,
    *,
    chain_id: str = "demo",
    n: int = 4,
    blocks: int = 40,
    txs_per_block: int = 500,
    payload_size: int = 256,
    seed: int = 1,
    group: int = 8,
    clock: Callable[[], float],
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Build, store and verify a demonstration ledger in ``directory`` (which must not exist)."""
    rng = random.Random(seed)
    keys, committee_file = make_keys(directory / "keys", chain_id, n)
    committee = load_committee(committee_file)
    clients = [SigningKey(rng.randbytes(32)) for _ in range(4)]
    seqs = [0] * len(clients)
    ledger_dir = directory / "ledger"
    prev = genesis_hash(chain_id)
    total = signed = 0
    sample = b""
    seconds = 0.0
    with LedgerStore.open(ledger_dir, chain_id=chain_id) as store:
        batch: list[Block] = []
        for height in range(1, blocks + 1):
            txs = []
            for _ in range(txs_per_block):
                c = rng.randrange(len(clients))
                seqs[c] += 1
                payload = rng.randbytes(payload_size)
                if c == 0:  # one client signs its requests; the others rely on TLS identity
                    tx = Transaction.signed(clients[c], chain_id, seqs[c], payload)
                    signed += 1
                else:
                    client_id = clients[c].public_key.raw[:16]
                    tx = Transaction(client=client_id, seq=seqs[c], payload=payload, signature=b"")
                txs.append(tx.encode())
            header = make_header(
                chain_id=chain_id,
                height=height,
                prev_hash=prev,
                txs=txs,
                protocol="pbft",
                view=0,
                proposer=height % n,
            )
            quorum = sorted(rng.sample(range(n), committee.quorum))
            block = Block(
                header=header,
                txs=tuple(txs),
                certificate=certify(header.commit_statement(), keys, quorum),
            )
            prev = header.hash()
            total += len(txs)
            if height == (blocks + 1) // 2:
                sample = txid_of(txs[len(txs) // 2])
            batch.append(block)
            if len(batch) == group or height == blocks:
                started = clock()
                store.extend(batch)
                seconds += clock() - started
                batch.clear()
                if progress is not None:
                    progress(height)
    return DemoResult(ledger_dir, committee_file, blocks, total, signed, sample, seconds)

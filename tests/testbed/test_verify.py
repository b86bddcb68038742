"""The testbed's ledger check: agreement, duplicates and acknowledged transactions, on ledgers
written directly (no replicas), so each rule is seen to fail when it is broken."""

from __future__ import annotations

from pathlib import Path

import pytest

from bft.testbed import verify_cluster
from bft.testbed.layout import Cluster
from crypto.keyfiles import write_committee
from ledger import Block, make_header, txid_of
from ledger.store import LedgerStore
from tests.ledger.chain import CHAIN, COMMITTEE, build_chain, certify

BLOCKS = build_chain(12, seed=3, txs_per_block=4)


def _cluster(tmp_path: Path, ledgers: list[list[Block]]) -> Cluster:
    (tmp_path / "keys").mkdir()
    write_committee(tmp_path / "keys" / "committee.toml", COMMITTEE)
    cluster = Cluster(tmp_path, CHAIN, "pbft", 4, {}, {}, True)
    for replica, blocks in enumerate(ledgers):
        with LedgerStore.open(cluster.data_dir(replica) / "ledger", chain_id=CHAIN) as store:
            store.extend(blocks)
    return cluster


def _with_txs(txs: list[bytes], after: Block) -> Block:
    header = make_header(
        chain_id=CHAIN,
        height=after.height + 1,
        prev_hash=after.hash(),
        txs=txs,
        protocol="pbft",
        view=9,
        proposer=1,
    )
    return Block(header=header, txs=tuple(txs), certificate=certify(header))


def test_agreeing_ledgers_of_different_heights_pass(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, [BLOCKS, BLOCKS, BLOCKS[:7], BLOCKS[:3]])
    acked = [txid_of(BLOCKS[2].txs[1]), txid_of(BLOCKS[11].txs[0])]
    report = verify_cluster(cluster, acked[:1])
    assert report.ok and not report.identical and report.heights == [12, 12, 7, 3]
    # Acknowledged but beyond a shorter ledger's height: not in that ledger.
    report = verify_cluster(cluster, acked)
    assert [p.split(":")[0] for p in report.problems] == ["replica 2", "replica 3"]
    assert "not in its ledger exactly once" in report.problems[0]


def test_disagreement_and_duplicates_are_reported_per_replica(tmp_path: Path) -> None:
    repeat = _with_txs([BLOCKS[3].txs[0], b"\x00" * 10], BLOCKS[-1])  # a transaction again
    other = _with_txs([b"\x01" * 10], BLOCKS[5])  # a different block at height 7
    cluster = _cluster(tmp_path, [[*BLOCKS, repeat], BLOCKS, [*BLOCKS[:6], other], BLOCKS[:3]])
    report = verify_cluster(cluster, [txid_of(BLOCKS[3].txs[0]), txid_of(other.txs[0])])
    problems = report.problems
    assert "replicas 2 and 0 disagree at height 7" in problems
    # The repeat is at height 13: only the ledger holding it has a duplicate.
    assert [p for p in problems if "more than once" in p] == [
        f"replica 0: 1 transactions appear more than once (first {txid_of(repeat.txs[0]).hex()[:16]})"
    ]
    not_once = sorted(p.split(":")[0] for p in problems if "exactly once" in p)
    # replica 0: the first id twice; 1: the second absent; 3: both absent. Replica 2 holds
    # both once: its ledger, which diverged, was read on its own.
    assert not_once == ["replica 0", "replica 1", "replica 3"]


@pytest.mark.parametrize("n_blocks", [0, 1])
def test_empty_and_tiny_ledgers(tmp_path: Path, n_blocks: int) -> None:
    cluster = _cluster(tmp_path, [BLOCKS[:n_blocks]] * 4)
    report = verify_cluster(cluster)
    assert report.ok and report.identical

"""When the replica snapshots its client table, and which snapshots it will not use."""

from __future__ import annotations

from pathlib import Path

import pytest

import bft.node.clients as clients
from bft.core.requests import ClientTable, Request
from bft.node.clients import ClientTableFile
from bft.pbft import PbftConfig
from ledger import Transaction


def table_with(places: int) -> ClientTable:
    table = ClientTable.for_config(PbftConfig())
    for seq in range(1, places + 1):
        tx = Transaction(client=b"c%d" % (seq % 1000), seq=seq, payload=b"x", signature=b"")
        table.record(Request.from_tx(tx), 1, 0)
    return table


def test_a_snapshot_is_due_by_blocks_or_transactions_and_worth_its_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clients, "SNAPSHOT_EVERY_BLOCKS", 100)
    monkeypatch.setattr(clients, "SNAPSHOT_EVERY_TXS", 1000)
    file = ClientTableFile(tmp_path, PbftConfig())
    small = table_with(10)
    assert file.take(small, 99, 10) is None  # neither limit reached
    data = file.take(small, 100, 0)
    assert data is not None and file.height == 100 and file.txs_since == 0
    assert file.take(small, 150, 1000) is not None  # the transaction limit
    # A big table and a few transactions: the replay saved would cost less than the snapshot.
    big = table_with(100_000)
    assert file.take(big, 300, 5) is None
    assert file.take(big, 400, 4000) is None  # (4005 + 9 * 250) * 11 < 100,000
    assert file.take(big, 500, 5000) is not None  # (9005 + 9 * 350) * 11 >= 100,000
    # Never when the table holds blocks the ledger does not (not yet written).
    ahead = table_with(10)
    ahead.record(
        Request.from_tx(Transaction(client=b"z", seq=1, payload=b"", signature=b"")), 999, 0
    )
    assert file.snapshot(ahead, 998) is None


def test_a_snapshot_above_the_ledger_or_with_other_limits_is_not_used(tmp_path: Path) -> None:
    file = ClientTableFile(tmp_path, PbftConfig())
    assert file.read(10) == "no snapshot"
    file.write(table_with(10).snapshot(50))
    assert file.read(49) == "it is of height 50, above the ledger's 49"
    found = file.read(50)
    assert not isinstance(found, str) and found[1] == 50
    other = ClientTableFile(tmp_path, PbftConfig(max_clients=7))
    reason = other.read(50)
    assert isinstance(reason, str) and "made with window, max_clients" in reason
    file.path.write_bytes(b"\x00" * 10)
    assert "damaged" in str(file.read(50))

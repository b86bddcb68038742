"""The durable protocol log: appends survive a reopen, a torn tail is truncated on open (those
records were never durable, so nothing that depended on them was sent), replace is atomic."""

from __future__ import annotations

from pathlib import Path

import pytest

from bft.node import ProtocolLog
from bft.pbft.state import ViewRecord, VoteRecord
from bft.protocols import spec

UNION = spec("pbft").log_records
DIGEST = bytes(range(32))


def records(k: int) -> list[ViewRecord | VoteRecord]:
    out: list[ViewRecord | VoteRecord] = []
    for i in range(k):
        out.append(ViewRecord(view=i))
        out.append(VoteRecord(kind="prepare", view=i, seq=i + 1, digest=DIGEST))
    return out


def test_appends_survive_a_reopen(tmp_path: Path) -> None:
    wal = ProtocolLog(tmp_path, UNION)
    wal.append(records(3))
    wal.append(records(1))
    wal.close()
    again = ProtocolLog(tmp_path, UNION)
    assert again.loaded == records(3) + records(1)
    again.close()


@pytest.mark.parametrize("cut", [1, 4, 9, 13, 20])
def test_a_torn_tail_is_truncated_on_open(tmp_path: Path, cut: int) -> None:
    wal = ProtocolLog(tmp_path, UNION)
    wal.append(records(2))
    good = wal.path.stat().st_size
    wal.append([VoteRecord(kind="commit", view=7, seq=9, digest=DIGEST)])
    whole = wal.path.stat().st_size
    wal.close()
    # A crash in the middle of the last append: only part of its record reached the disk.
    with open(wal.path, "r+b") as f:
        f.truncate(min(good + cut, whole - 1))
    reopened = ProtocolLog(tmp_path, UNION)
    assert reopened.loaded == records(2)
    assert reopened.path.stat().st_size == good  # the torn bytes are gone
    # Appends go after the last good record, never after garbage.
    reopened.append([ViewRecord(view=42)])
    reopened.close()
    assert ProtocolLog(tmp_path, UNION).loaded == [*records(2), ViewRecord(view=42)]


def test_garbage_after_good_records_is_dropped(tmp_path: Path) -> None:
    wal = ProtocolLog(tmp_path, UNION)
    wal.append(records(2))
    good = wal.path.stat().st_size
    wal.close()
    with open(wal.path, "ab") as f:
        f.write(b"BFTR\x00\x00\x00\x05\xde\xad\xbe\xef hello")  # a bad checksum
    reopened = ProtocolLog(tmp_path, UNION)
    assert reopened.loaded == records(2)
    assert reopened.path.stat().st_size == good
    reopened.close()


def test_replace_is_the_whole_log(tmp_path: Path) -> None:
    wal = ProtocolLog(tmp_path, UNION)
    wal.append(records(5))
    wal.replace([ViewRecord(view=9)])
    wal.append([ViewRecord(view=10)])
    wal.close()
    assert ProtocolLog(tmp_path, UNION).loaded == [ViewRecord(view=9), ViewRecord(view=10)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_appended_records_are_on_disk_only(tmp_path: Path) -> None:
    """The log counts what it appends and keeps none of it in memory: a Raft log compacts every
    few thousand records of up to a block each, and a copy of all of them in the replica's
    memory grew it by hundreds of MB between compactions. What was read at open is handed over
    once, for recovery."""
    wal = ProtocolLog(tmp_path, UNION)
    wal.append(records(2))
    wal.close()
    wal = ProtocolLog(tmp_path, UNION)
    assert wal.count == 4
    assert wal.take_loaded() == records(2)
    assert wal.loaded == [] and wal.take_loaded() == []
    for _ in range(50):
        wal.append(records(10))
    assert wal.loaded == [] and wal.count == 4 + 50 * 20
    wal.replace([ViewRecord(view=9)])
    assert wal.loaded == [] and wal.count == 1
    wal.close()
    assert ProtocolLog(tmp_path, UNION).loaded == [ViewRecord(view=9)]

"""The ledger store: group commit, reads, indexes, segments, locking, read-only use."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from pathlib import Path

import pytest

from ledger import BlockError, StoreError, txid_of
from ledger.store import LedgerStore
from tests.ledger.chain import CHAIN, COMMITTEE, build_chain

BLOCKS = build_chain(30)


def open_store(path: Path, **kwargs: object) -> LedgerStore:
    return LedgerStore.open(path, chain_id=CHAIN, **kwargs)  # type: ignore[arg-type]


def test_append_sync_read(tmp_path: Path) -> None:
    with open_store(tmp_path / "l") as store:
        assert store.height == 0
        store.extend(BLOCKS[:10])
        assert store.height == 10
        assert [b for b in store.blocks()] == BLOCKS[:10]
        assert store.get(7) == BLOCKS[6]
        assert store.last_hash == BLOCKS[9].hash()
        assert store.verify(COMMITTEE, check_transactions=True).height == 10


def test_unsynced_blocks_are_not_served_and_are_lost_on_close(tmp_path: Path) -> None:
    with open_store(tmp_path / "l") as store:
        store.extend(BLOCKS[:3])
        store.append(BLOCKS[3])
        assert store.tip[0] == 4 and store.height == 3
        with pytest.raises(StoreError, match="no block at height 4"):
            store.get(4)
    with open_store(tmp_path / "l") as store:
        assert store.height == 3


def test_group_commit_uses_one_fsync_per_sync(tmp_path: Path) -> None:
    with open_store(tmp_path / "l") as store:
        for block in BLOCKS[:12]:
            store.append(block)
        store.sync()
        store.extend(BLOCKS[12:15])
        assert store.statistics().syncs == 2


@pytest.mark.parametrize(
    "index,changes,words",
    [
        (5, {}, "expected height 5"),  # skips height 5 (appends block 6 after 4)
        (4, {"prev_hash": bytes(32)}, "link is broken"),
        (4, {"chain_id": "other"}, "block of chain"),
        (4, {"tx_root": bytes(32)}, "Merkle root"),
    ],
)
def test_append_checks_linkage_and_contents(
    tmp_path: Path, index: int, changes: dict, words: str
) -> None:
    with open_store(tmp_path / "l") as store:
        store.extend(BLOCKS[:4])
        block = BLOCKS[index]
        if changes:
            block = dataclasses.replace(block, header=dataclasses.replace(block.header, **changes))
        with pytest.raises(BlockError, match=words):
            store.append(block)
        assert store.tip == (4, BLOCKS[3].hash())
        store.extend(BLOCKS[4:6])
        assert store.height == 6


def test_segments_roll_over_and_reopen(tmp_path: Path) -> None:
    with open_store(tmp_path / "l", segment_size=8192) as store:
        for i in range(0, 30, 3):
            store.extend(BLOCKS[i : i + 3])
        assert store.statistics().segments > 3
    with open_store(tmp_path / "l", segment_size=8192) as store:
        assert store.height == 30
        assert list(store.blocks()) == BLOCKS
        assert store.verify(COMMITTEE).height == 30


def test_transaction_index_and_receipts(tmp_path: Path) -> None:
    with open_store(tmp_path / "l", segment_size=8192) as store:
        store.extend(BLOCKS)
        for height in (1, 9, 30):
            block = BLOCKS[height - 1]
            for position, raw in enumerate(block.txs):
                assert store.find_transaction(txid_of(raw)) == (height, position)
        assert store.find_transaction(bytes(32)) is None
        raw = BLOCKS[17].txs[-1]
        receipt = store.receipt(txid_of(raw))
        assert receipt is not None and receipt.tx == raw
        receipt.verify(COMMITTEE)
        assert store.receipt(bytes(32)) is None


def test_index_is_rebuilt_when_missing_or_garbage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l"
    with open_store(path, segment_size=8192) as store:
        store.extend(BLOCKS)
    (path / "index.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with open_store(path) as store:
        assert store.height == 30
        raw = BLOCKS[20].txs[0]
        assert store.find_transaction(txid_of(raw)) == (21, 0)
    (path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING), open_store(path) as store:
        assert store.height == 30
        assert store.get(30) == BLOCKS[29]
    assert "rebuilding it" in caplog.text


def test_index_that_lags_catches_up_on_open(tmp_path: Path) -> None:
    path = tmp_path / "l"
    with open_store(path) as store:
        store.extend(BLOCKS)
    db = sqlite3.connect(path / "index.sqlite")
    db.execute("DELETE FROM blocks WHERE height > 11")
    db.commit()
    db.close()
    with open_store(path) as store:
        assert store.height == 30
        raw = BLOCKS[25].txs[1]
        assert store.find_transaction(txid_of(raw)) == (26, 1)


def test_index_ahead_of_the_segments_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l"
    with open_store(path) as store:
        store.extend(BLOCKS[:10])
    segment = next(path.glob("*.seg"))
    data = segment.read_bytes()
    with open_store(path) as store:
        store.extend(BLOCKS[10:])
    segment.write_bytes(data)  # the segment loses blocks 11..30, the index still has them
    with caplog.at_level(logging.WARNING), open_store(path) as store:
        assert store.height == 10
        store.extend(BLOCKS[10:12])
        assert store.verify(COMMITTEE).height == 12
    assert "index disagrees" in caplog.text


def test_only_one_writer(tmp_path: Path) -> None:
    path = tmp_path / "l"
    with open_store(path) as store:
        store.extend(BLOCKS[:2])
        with pytest.raises(StoreError, match="in use by another process"):
            open_store(path)
        with LedgerStore.open(path, readonly=True) as reader:
            assert reader.height == 2
    with open_store(path) as store:
        assert store.height == 2


def test_readonly_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l"
    with open_store(path) as store:
        store.extend(BLOCKS[:5])
    segment = next(path.glob("*.seg"))
    with open(segment, "ab") as fh:
        fh.write(b"BFTR\x00\x00")  # a torn record
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with LedgerStore.open(path, readonly=True) as reader:
        assert reader.height == 5 and reader.tail_dropped == 6
        with pytest.raises(StoreError, match="read-only"):
            reader.append(BLOCKS[5])
        with pytest.raises(StoreError, match="read-only"):
            reader.truncate_after(2)
    after = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    assert after == before


def test_manifest_guards_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "l"
    open_store(path).close()
    with pytest.raises(StoreError, match="ledger of chain 'testchain', not 'other'"):
        LedgerStore.open(path, chain_id="other")
    with pytest.raises(StoreError, match="not a ledger"):
        LedgerStore.open(tmp_path / "missing", chain_id=CHAIN, create=False)
    with pytest.raises(StoreError, match="not a ledger"):
        LedgerStore.open(tmp_path / "missing", readonly=True)
    (path / "LEDGER").write_text("format = 'x'\n")
    with pytest.raises(StoreError, match="format"):
        open_store(path)


def test_truncate_after(tmp_path: Path) -> None:
    path = tmp_path / "l"
    with open_store(path, segment_size=8192) as store:
        store.extend(BLOCKS)
        store.truncate_after(12)
        assert store.height == 12 and store.last_hash == BLOCKS[11].hash()
        assert store.find_transaction(txid_of(BLOCKS[20].txs[0])) is None
        store.extend(BLOCKS[12:])
        assert store.verify(COMMITTEE).height == 30
        store.truncate_after(0)
        assert store.height == 0
        store.extend(BLOCKS[:3])
    with open_store(path) as store:
        assert store.height == 3
        with pytest.raises(StoreError, match="cannot truncate"):
            store.truncate_after(4)


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = open_store(tmp_path / "l")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append(BLOCKS[0])
    store.close()  # idempotent


def test_index_rows_not_yet_committed_are_rebuilt_after_a_crash(tmp_path: Path) -> None:
    """Index rows are committed to SQLite in batches; a crash between batches loses only
    derived data, which opening rebuilds from the segments."""
    import os

    from ledger import store as store_module

    path = tmp_path / "l"
    blocks = build_chain(store_module.INDEX_EVERY_BLOCKS + 20, seed=11, txs_per_block=2)
    store = open_store(path)
    store.extend(blocks[: store_module.INDEX_EVERY_BLOCKS])  # committed to SQLite
    store.extend(blocks[store_module.INDEX_EVERY_BLOCKS :])  # still deferred
    assert store._deferred_blocks, "some rows should still be deferred"
    # Served from the in-memory rows before they reach SQLite.
    raw = blocks[-1].txs[0]
    assert store.find_transaction(txid_of(raw)) == (len(blocks), 0)
    assert store.get(len(blocks)) == blocks[-1]
    # Crash: the process goes away without flushing or closing anything.
    assert store._index is not None and store._lock_fd is not None
    store._index.db.close()
    os.close(store._lock_fd)
    with open_store(path) as reopened:
        assert reopened.height == len(blocks)
        for height in (1, store_module.INDEX_EVERY_BLOCKS, len(blocks)):
            first = blocks[height - 1].txs[0]
            assert reopened.find_transaction(txid_of(first)) == (height, 0)


def _indexed(path: Path) -> tuple[int, list[str]]:
    """Block rows in SQLite, and the run files beside the segments."""
    db = sqlite3.connect(path / "index.sqlite")
    try:
        rows = db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]
    finally:
        db.close()
    return rows, sorted(p.name for p in path.glob("*.txi"))


def _segment_names(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.seg"))


def _every_tx_found(store: LedgerStore, blocks: list) -> None:  # type: ignore[type-arg]
    for block in blocks:
        for position, raw in enumerate(block.txs):
            assert store.find_transaction(txid_of(raw)) == (block.header.height, position)


def test_sealed_segments_get_a_run_file_and_lookups_use_it(tmp_path: Path) -> None:
    """Each segment, once sealed, gets a sorted run of its transactions; the open one has none
    (it is in memory). After reopening, with the SQLite index deleted too, every transaction
    is found, and the runs are what lookups read (a lookup opens no segment it need not)."""
    from ledger import txindex

    path = tmp_path / "l"
    with open_store(path, segment_size=8192) as store:
        store.extend(BLOCKS)
        _every_tx_found(store, BLOCKS)
    segments = _segment_names(path)
    assert len(segments) > 3
    rows, runs = _indexed(path)
    assert rows == 30
    assert runs == [name.replace(".seg", ".txi") for name in segments[:-1]]
    for name in runs:
        data = (path / name).read_bytes()
        first, count = int(name[:20]), int.from_bytes(data[16:24], "big")
        heights = range(first, int(segments[segments.index(name[:20] + ".seg") + 1][:20]))
        assert count == sum(len(BLOCKS[h - 1].txs) for h in heights)
        assert data[:8] == txindex.RUN_MAGIC
    for suffix in ("", "-wal", "-shm"):
        (path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with open_store(path) as store:
        # Newest segment first, and no further than the transaction found.
        assert store.find_transaction(txid_of(BLOCKS[-1].txs[0])) == (30, 0)
        assert not store._runs_ok
        newest_run = int(runs[-1][:20])
        block = BLOCKS[newest_run - 1]
        assert store.find_transaction(txid_of(block.txs[0])) == (newest_run, 0)
        assert store._runs_ok == {newest_run}
        _every_tx_found(store, BLOCKS)
        assert store.find_transaction(bytes(32)) is None
        assert not store._built, "every sealed segment was served by its run file"
    with LedgerStore.open(path, readonly=True) as reader:
        _every_tx_found(reader, BLOCKS)


@pytest.mark.parametrize("damage", ["flip", "truncate", "header", "missing", "empty"])
def test_a_bad_run_file_is_rebuilt_from_its_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = tmp_path / "l"
    with open_store(path, segment_size=8192) as store:
        store.extend(BLOCKS)
    run = sorted(path.glob("*.txi"))[1]
    good = run.read_bytes()
    bad = {
        "flip": good[:40] + bytes([good[40] ^ 1]) + good[41:],
        "truncate": good[:-9],
        "header": b"BFTLTXI1" + (1).to_bytes(8, "big") + good[16:],
        "missing": None,
        "empty": b"",
    }[damage]
    if bad is None:
        run.unlink()
    else:
        run.write_bytes(bad)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with caplog.at_level(logging.WARNING), LedgerStore.open(path, readonly=True) as reader:
        _every_tx_found(reader, BLOCKS)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before
    if damage != "missing":
        assert f"{run}: " in caplog.text and "indexing the segment again" in caplog.text
    with open_store(path) as store:
        _every_tx_found(store, BLOCKS)
    assert run.read_bytes() == good  # written again by the store that may write


def test_a_run_that_points_elsewhere_never_yields_a_wrong_transaction(tmp_path: Path) -> None:
    """Places read from an index are checked against the block: a run whose places are
    shuffled (checksum recomputed, so it passes its checks) can hide a transaction, never
    answer with another one's place."""
    import random
    import zlib

    from ledger.txindex import RUN_HEADER

    path = tmp_path / "l"
    with open_store(path, segment_size=8192) as store:
        store.extend(BLOCKS)
    run = sorted(path.glob("*.txi"))[0]
    data = run.read_bytes()
    count = int.from_bytes(data[16:24], "big")
    at = RUN_HEADER.size + 8 * count
    places = [data[at + 8 * i : at + 8 * i + 8] for i in range(count)]
    random.Random(5).shuffle(places)
    body = data[:at] + b"".join(places)
    run.write_bytes(body + zlib.crc32(body).to_bytes(4, "big"))
    found = 0
    with LedgerStore.open(path, readonly=True) as reader:
        for block in BLOCKS:
            for position, raw in enumerate(block.txs):
                where = reader.find_transaction(txid_of(raw))
                assert where in (None, (block.header.height, position))
                found += where is not None
    assert found < sum(len(b.txs) for b in BLOCKS)


def test_the_open_segment_has_no_run_and_truncation_removes_stale_runs(tmp_path: Path) -> None:
    """A run describes a sealed segment: a leftover run of the last segment (which appends
    would outgrow) is removed on open, truncating removes the runs of the segments cut, and a
    segment sealed after a reopen gets a run of all its transactions, those from before the
    reopen included."""
    path = tmp_path / "l"
    with open_store(path, segment_size=8192) as store:
        store.extend(BLOCKS[:20])
        last = _segment_names(path)[-1]
    stale = path / last.replace(".seg", ".txi")
    stale.write_bytes(b"left over")
    (path / "00000000000000000002.txi.tmp").write_bytes(b"half written")
    with open_store(path, segment_size=8192) as store:
        assert not stale.exists() and not list(path.glob("*.tmp"))
        store.extend(BLOCKS[20:])  # seals the segment opened before the reopen
        assert stale.exists()
        _every_tx_found(store, BLOCKS)
        store.truncate_after(12)
        segments = _segment_names(path)
        assert _indexed(path)[1] == [n.replace(".seg", ".txi") for n in segments[:-1]]
        assert store.find_transaction(txid_of(BLOCKS[20].txs[0])) is None
        _every_tx_found(store, BLOCKS[:12])
        store.extend(BLOCKS[12:])
        _every_tx_found(store, BLOCKS)
    for suffix in ("", "-wal", "-shm"):
        (path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with open_store(path) as store:
        _every_tx_found(store, BLOCKS)
        assert not store._built


def test_an_index_of_the_older_layout_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "l"
    with open_store(path) as store:
        store.extend(BLOCKS[:5])
    db = sqlite3.connect(path / "index.sqlite")
    db.execute("CREATE TABLE txs(prefix INTEGER, height INTEGER, position INTEGER)")
    db.execute("INSERT INTO txs VALUES (1, 1, 0)")
    db.commit()
    db.close()
    with open_store(path) as store:
        _every_tx_found(store, BLOCKS[:5])
    db = sqlite3.connect(path / "index.sqlite")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert tables == {"blocks"}


def test_background_index_is_written_off_the_commit_path(tmp_path: Path) -> None:
    """With ``background_index`` set, syncs never write the index; the owner detaches the
    entries (block rows, runs of sealed segments) and writes them on another thread while
    blocks keep being appended and read. Every transaction is findable at every moment:
    waiting, detached, and written."""
    import threading

    from ledger import store as store_module

    path = tmp_path / "l"
    count = store_module.INDEX_EVERY_BLOCKS * 2
    blocks = build_chain(count + 10, seed=12, txs_per_block=3)
    store = open_store(path, segment_size=8192)
    store.background_index = True
    store.extend(blocks[:count])
    sealed = len(_segment_names(path)) - 1
    assert sealed > 2
    assert _indexed(path) == (0, [])  # nothing inline, past the inline thresholds
    lag = store.index_lag
    assert count < lag < count * 4  # block rows, and the sealed segments' transactions
    batch = store.detach_index()
    assert batch is not None and batch.rows == lag and len(batch.runs) == sealed
    assert store.detach_index() is None  # one batch at a time
    assert store.index_lag == lag
    # Detached, not yet written: still served.
    assert store.get(count) == blocks[count - 1]
    _every_tx_found(store, blocks[:count])
    writer = threading.Thread(target=store.write_index, args=(batch,))
    writer.start()
    for block in blocks[count:]:  # appending and reading meanwhile
        store.extend([block])
        assert store.get(block.header.height) == block
    writer.join()
    assert _indexed(path) == (
        count,
        [n.replace(".seg", ".txi") for n in _segment_names(path)][:sealed],
    )
    _every_tx_found(store, blocks)
    with pytest.raises(StoreError, match="not the one detached"):
        store.write_index(batch)
    # A batch detached but never written (the owner stopped) is written on close.
    assert store.detach_index() is not None
    store.close()
    assert _indexed(path)[0] == count + 10
    with open_store(path) as reopened:
        _every_tx_found(reopened, blocks)


def test_index_entries_cost_the_collector_nothing_and_survive_prefix_collisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries of the open segment are ints in arrays (no object per transaction for the
    garbage collector to walk); ids sharing a prefix keep every place, in memory and in runs."""
    import gc

    from ledger import store as store_module
    from ledger import txindex

    blocks = build_chain(40, seed=13, txs_per_block=4)
    with open_store(tmp_path / "a") as store:
        before = len(gc.get_objects())
        store.extend(blocks)
        assert len(gc.get_objects()) - before < 100  # not one per transaction (160)
    monkeypatch.setattr(txindex, "tx_prefix", lambda txid: 7)  # every id collides
    monkeypatch.setattr(txindex, "tx_prefixes", lambda txids: [7] * len(txids))
    monkeypatch.setattr(store_module, "tx_prefix", lambda txid: 7)
    path = tmp_path / "b"
    with open_store(path, segment_size=4096) as store:
        store.background_index = True
        store.extend(blocks)
        _every_tx_found(store, blocks)  # in memory
        batch = store.detach_index()
        assert batch is not None
        _every_tx_found(store, blocks)  # detached
        store.write_index(batch)
        _every_tx_found(store, blocks)  # written
    with open_store(path) as store:
        _every_tx_found(store, blocks)

"""Crash-shaped tests: torn tails at every byte, bit flips anywhere, damage in the middle.

The rule under test: after any such damage the store opens, serves only blocks that verify (each
equal to the block that was written), reports where it found the damage, and appends continue on
a correct chain once the damage is truncated.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import pytest

from ledger import CorruptRecord, StoreError
from ledger.store import RECORD_HEADER, SEGMENT_HEADER, LedgerStore
from tests.ledger.chain import CHAIN, COMMITTEE, build_chain

BLOCKS = build_chain(12, txs_per_block=(1, 4))


def write_ledger(path: Path, blocks=BLOCKS, segment_size: int = 1 << 20) -> None:  # type: ignore[no-untyped-def]
    with LedgerStore.open(path, chain_id=CHAIN, segment_size=segment_size) as store:
        for i in range(0, len(blocks), 3):
            store.extend(blocks[i : i + 3])


def record_offsets(segment: Path) -> list[tuple[int, int]]:
    """(offset, total length) of each record in a segment."""
    data = segment.read_bytes()
    pos = SEGMENT_HEADER.size
    out = []
    while pos < len(data):
        _, length, _ = RECORD_HEADER.unpack_from(data, pos)
        out.append((pos, RECORD_HEADER.size + length))
        pos += RECORD_HEADER.size + length
    return out


def served_blocks(store: LedgerStore) -> list:  # type: ignore[type-arg]
    """Every block the store is willing to serve, stopping at the first refusal."""
    out = []
    for height in range(1, store.height + 1):
        try:
            out.append(store.get(height))
        except CorruptRecord:
            break
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "ledger"
    write_ledger(path)
    (path / "index.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    return path


def copy_of(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ledger"
    shutil.copytree(pristine, target)
    return target


def test_truncation_at_every_byte_of_the_last_record(pristine: Path, tmp_path: Path) -> None:
    segment = next(pristine.glob("*.seg"))
    offset, length = record_offsets(segment)[-1]
    original = segment.read_bytes()
    target = copy_of(pristine, tmp_path)
    seg_copy = target / segment.name
    for cut in range(offset, offset + length):
        seg_copy.write_bytes(original[:cut])
        for extra in target.glob("index.sqlite*"):
            extra.unlink()
        with LedgerStore.open(target, chain_id=CHAIN) as store:
            assert store.height == 11, f"cut at {cut}"
            assert store.damage is None
            assert seg_copy.stat().st_size == offset, "torn tail not truncated"
            assert served_blocks(store) == BLOCKS[:11]
            if cut == offset + length - 1:
                store.extend(BLOCKS[11:])
                assert store.verify(COMMITTEE).height == 12


def test_truncation_with_an_index_present(tmp_path: Path) -> None:
    path = tmp_path / "l"
    write_ledger(path)
    segment = next(path.glob("*.seg"))
    offset, length = record_offsets(segment)[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[: offset + length // 2])
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        # The index still names height 12; its record is gone, so it is rebuilt.
        assert store.height == 11
        store.extend(BLOCKS[11:])
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        assert store.verify(COMMITTEE).height == 12


def test_single_bit_flips_anywhere(pristine: Path, tmp_path: Path) -> None:
    seed = 20261122
    rng = random.Random(seed)
    segment = next(pristine.glob("*.seg"))
    original = segment.read_bytes()
    target = copy_of(pristine, tmp_path)
    seg_copy = target / segment.name
    positions = sorted(
        set(rng.sample(range(len(original)), 250)) | {0, 8, 16, 17, 20, len(original) - 1}
    )
    for pos in positions:
        bit = rng.randrange(8)
        damaged = bytearray(original)
        damaged[pos] ^= 1 << bit
        seg_copy.write_bytes(bytes(damaged))
        for extra in target.glob("index.sqlite*"):
            extra.unlink()
        where = f"seed {seed}: bit {bit} of byte {pos}"
        with LedgerStore.open(target, chain_id=CHAIN) as store:
            served = served_blocks(store)
            # Nothing served that differs from what was written.
            assert served == BLOCKS[: len(served)], where
            # The damage is always noticed: the chain is shorter, or flagged as damaged.
            assert len(served) < 12 or store.damage is not None, where
            if store.damage is not None:
                assert store.damage.height == len(served) + 1, where
                with pytest.raises(StoreError, match="repair it before appending"):
                    store.append(BLOCKS[len(served)])
                with pytest.raises(CorruptRecord):
                    store.verify(COMMITTEE)
                store.truncate_after(len(served))
            # Appends continue on a correct chain.
            store.extend(BLOCKS[len(served) :])
            assert store.verify(COMMITTEE).height == 12, where


def test_corruption_in_the_middle_is_reported_not_truncated(
    pristine: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = copy_of(pristine, tmp_path)
    segment = next(target.glob("*.seg"))
    offset, length = record_offsets(segment)[4]  # height 5
    data = bytearray(segment.read_bytes())
    data[offset + RECORD_HEADER.size + length // 2] ^= 0x10
    segment.write_bytes(bytes(data))
    size = len(data)
    with caplog.at_level(logging.ERROR), LedgerStore.open(target, chain_id=CHAIN) as store:
        assert store.height == 4
        assert store.damage is not None
        assert (store.damage.height, store.damage.offset) == (5, offset)
        assert store.damage.segment == segment.name
        assert "checksum mismatch" in store.damage.reason
        assert segment.stat().st_size == size, "nothing may be truncated"
        assert served_blocks(store) == BLOCKS[:4]
        with pytest.raises(CorruptRecord) as err:
            store.verify(COMMITTEE)
        assert err.value.height == 5 and err.value.offset == offset
    assert f"height 5 at {segment.name}:{offset}" in caplog.text


def flip_record_byte(segment: Path, index: int) -> int:
    offset, _ = record_offsets(segment)[index]
    data = bytearray(segment.read_bytes())
    data[offset + RECORD_HEADER.size + 3] ^= 0x01
    segment.write_bytes(bytes(data))
    return offset


def test_corruption_under_the_index_is_found_on_open(tmp_path: Path) -> None:
    path = tmp_path / "l"
    write_ledger(path)  # with its index: opening checks every indexed record's checksum
    offset = flip_record_byte(next(path.glob("*.seg")), 6)  # height 7
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        assert store.damage is not None
        assert (store.damage.height, store.damage.offset) == (7, offset)
        assert store.height == 6
        assert [store.get(h) for h in range(1, 7)] == BLOCKS[:6]
        with pytest.raises(StoreError):
            store.get(9)  # refuses past the damage, though record 9 is intact
        with pytest.raises(StoreError, match="repair"):
            store.append(BLOCKS[0])
        store.truncate_after(6)
        store.extend(BLOCKS[6:])
        assert store.verify(COMMITTEE).height == 12


def test_corruption_found_on_read_stops_serving_past_it(tmp_path: Path) -> None:
    path = tmp_path / "l"
    write_ledger(path)
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        offset = flip_record_byte(next(path.glob("*.seg")), 6)  # rots while open
        assert store.height == 12
        assert [store.get(h) for h in range(1, 7)] == BLOCKS[:6]
        with pytest.raises(CorruptRecord) as err:
            store.get(7)
        assert (err.value.height, err.value.offset) == (7, offset)
        with pytest.raises(CorruptRecord):
            store.get(9)  # refuses past the damage, though record 9 is intact
        with pytest.raises(StoreError, match="repair"):
            store.append(BLOCKS[0])
        store.truncate_after(6)
        store.extend(BLOCKS[6:])
        assert store.verify(COMMITTEE).height == 12


def test_damage_to_a_middle_segment(tmp_path: Path) -> None:
    path = tmp_path / "l"
    write_ledger(path, segment_size=3000)
    segments = sorted(path.glob("*.seg"))
    assert len(segments) >= 2
    victim = segments[0]
    victim.write_bytes(victim.read_bytes()[:-5])  # torn, yet later segments follow
    for extra in path.glob("index.sqlite*"):
        extra.unlink()
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        assert store.damage is not None
        assert store.damage.segment == victim.name
        assert all(s.exists() for s in segments)
        good = len(served_blocks(store))
        assert served_blocks(store) == BLOCKS[:good]
        store.truncate_after(good)
        store.extend(BLOCKS[good:])
        assert store.verify(COMMITTEE).height == 12


def test_crash_during_segment_creation(tmp_path: Path) -> None:
    path = tmp_path / "l"
    write_ledger(path)
    # A new segment was created but its header never reached the disk.
    (path / f"{13:020d}.seg").write_bytes(b"BFTL")
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        assert store.height == 12 and store.damage is None
        assert not (path / f"{13:020d}.seg").exists()
        store.extend(build_chain(2, start_height=13, prev_hash=BLOCKS[-1].hash(), seed=5))
        assert store.verify(COMMITTEE).height == 14


def test_garbage_appended_after_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "l"
    write_ledger(path)
    segment = next(path.glob("*.seg"))
    with open(segment, "ab") as fh:
        fh.write(random.Random(3).randbytes(5000))
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        assert store.height == 12 and store.damage is None
        assert store.tail_dropped == 5000


def test_a_framed_block_inside_a_payload_cannot_fake_durable_data(tmp_path: Path) -> None:
    """A client may put anything in a payload, even a framed block of this chain above the tip.

    When the last record is torn, that planted record must not turn the torn tail into
    'corruption in the middle' (which would stop appends until a repair)."""
    from ledger import Block, Transaction, make_header
    from ledger.store import frame_record
    from tests.ledger.chain import certify

    fake_header = make_header(
        chain_id=CHAIN, height=99, prev_hash=bytes(32), txs=[], protocol="pbft", view=0, proposer=0
    )
    planted = frame_record(
        Block(header=fake_header, txs=(), certificate=certify(fake_header)).encode()
    )
    tx = Transaction(
        client=b"mallory", seq=1, payload=b"x" * 64 + planted + b"y" * 64, signature=b""
    )
    head = BLOCKS[-1]
    header = make_header(
        chain_id=CHAIN,
        height=13,
        prev_hash=head.hash(),
        txs=[tx.encode()],
        protocol="pbft",
        view=3,
        proposer=1,
    )
    block = Block(header=header, txs=(tx.encode(),), certificate=certify(header))
    path = tmp_path / "l"
    write_ledger(path, BLOCKS + [block])
    segment = next(path.glob("*.seg"))
    offset, length = record_offsets(segment)[-1]
    data = segment.read_bytes()
    for cut in (offset + length - 10, offset + length - 100):  # torn after the planted record
        segment.write_bytes(data[:cut])
        for extra in path.glob("index.sqlite*"):
            extra.unlink()
        with LedgerStore.open(path, chain_id=CHAIN) as store:
            assert store.damage is None and store.height == 12
            assert segment.stat().st_size == offset
        segment.write_bytes(data)


def test_oversized_blocks_are_refused_on_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger import BlockError
    from ledger import store as store_module

    monkeypatch.setattr(store_module, "MAX_RECORD", 200)
    with LedgerStore.open(tmp_path / "l", chain_id=CHAIN) as store:
        big = next(b for b in BLOCKS if len(b.encode()) > 200)
        store.extend(BLOCKS[: big.height - 1])
        with pytest.raises(BlockError, match="exceeds the record limit"):
            store.append(big)


def test_stray_files_are_not_segments(tmp_path: Path) -> None:
    path = tmp_path / "l"
    write_ledger(path)
    (path / ("\u0660" * 19 + "\u0661.seg")).write_bytes(b"junk")  # Arabic-Indic digits
    (path / "notes.seg").write_bytes(b"junk")
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        assert store.height == 12 and store.damage is None

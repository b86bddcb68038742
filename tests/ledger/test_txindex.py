"""A sealed segment's run: entries by id prefix, equal prefixes in the order they were added."""

from __future__ import annotations

import random
import sys
from array import array

import pytest

from ledger import txindex
from ledger.txindex import RUN_HEADER, SegmentTxs, check_run, run_places


@pytest.mark.parametrize("count", [0, 1, 7, txindex.SORT_CHUNK, 3 * txindex.SORT_CHUNK + 5])
def test_a_run_sorts_by_prefix_and_keeps_equal_prefixes_in_order(count: int) -> None:
    rng = random.Random(count)
    leaves = [rng.randbytes(32) for _ in range(count)]
    for i in range(0, count, 13):  # prefixes shared by several transactions, across chunks
        leaves[i] = leaves[i // 3][:8] + rng.randbytes(24)
    segment = SegmentTxs(1)
    for height, start in enumerate(range(0, count, 500), start=1):
        segment.add(height, leaves[start : start + 500])

    run = segment.encode_run()

    # What it must be: a stable sort of (prefix, place) by prefix alone.
    order = sorted(range(count), key=segment.prefixes.__getitem__)
    prefixes = array("Q", (segment.prefixes[i] for i in order))
    places = array("Q", (segment.places[i] for i in order))
    if sys.byteorder == "little":
        prefixes.byteswap()
        places.byteswap()
    body = RUN_HEADER.size
    assert run[body : body + 8 * count] == prefixes.tobytes()
    assert run[body + 8 * count : body + 16 * count] == places.tobytes()
    assert check_run(lambda at, size: run[at : at + size], len(run), 1, crc=True) == count
    # And every transaction is found at its place.
    for index in rng.sample(range(count), min(count, 50)):
        read = lambda at, size: run[at : at + size]  # noqa: E731
        found = run_places(read, 1, count, txindex.tx_prefix(leaves[index]))
        assert (1 + index // 500, index % 500) in found


def test_a_run_can_be_encoded_with_pauses_between_chunks() -> None:
    """The replica spreads a run's encoding over time (a pause between chunks); the run is the
    same."""
    rng = random.Random(5)
    count = 3 * txindex.SORT_CHUNK + 5
    segment = SegmentTxs(1)
    leaves = [rng.randbytes(32) for _ in range(count)]
    for height, start in enumerate(range(0, count, 500), start=1):
        segment.add(height, leaves[start : start + 500])
    pauses = []
    paced = segment.encode_run(pause=lambda: pauses.append(len(pauses)))
    assert paced == segment.encode_run()
    assert len(pauses) == 4 + 3  # after each of 4 sorted chunks, and every chunk merged


def test_entries_are_each_ids_prefix_and_place_however_the_ids_come() -> None:
    rng = random.Random(7)
    ids = [rng.randbytes(32) for _ in range(300)]
    expected_prefixes = [int.from_bytes(i[:8], "big") for i in ids]
    for given in (ids, tuple(ids), iter(ids)):
        segment = SegmentTxs(10)
        segment.add(12, given)
        assert list(segment.prefixes) == expected_prefixes
        assert list(segment.places) == [(2 << 32) | position for position in range(300)]
    # Not 32 bytes each, though 128 bytes for four: read one by one.
    odd = [b"short id", rng.randbytes(48), rng.randbytes(8), rng.randbytes(64)]
    segment = SegmentTxs(10)
    segment.add(10, odd)
    assert list(segment.prefixes) == [int.from_bytes(i[:8], "big") for i in odd]
    assert list(segment.places) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="does not fit"):
        segment.add(9, ids)

"""The transaction index of one segment: where each transaction id of the segment is.

A ledger answers "where is the transaction with this id" (receipts, ``bft ledger proof``) from
one index per segment, derived from the segment's records:

* the **open** segment (the last one, still appended to) keeps its entries in memory, in
  append order: two arrays of ints (no object per entry, nothing for the garbage collector);
* a **sealed** segment has a *run file* next to it (``<first height>.txi``), written once when
  the segment is sealed: the entries sorted by id prefix, found by binary search.

Writing a run costs what its own segment holds, whatever the size of the ledger (a single
B-tree over every transaction costs more per row as it grows: random keys touch a page deep in
it for every row). Runs are derived: a missing, short or corrupt run is rebuilt from its
segment, and every place found is checked against the block's transactions before it is
believed, so a bad run can hide a transaction but never point at a wrong one.

Run file layout (integers big-endian)::

    magic   8 bytes   b"BFTLTXI1"
    first   u64       height of the segment's first block
    count   u64       entries
    prefix  count x u64, ascending: the first 8 bytes of each transaction id
    place   count x u64, in the order of the prefixes: (height - first) << 32 | position
    crc     u32       CRC-32 of every byte before it

This module reads through a caller's ``read(offset, size)``: it opens no file.
"""

from __future__ import annotations

import heapq
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence

RUN_MAGIC = b"BFTLTXI1"
RUN_HEADER = struct.Struct(">8sQQ")
RUN_SUFFIX = ".txi"
_CRC = 4
_PLACE_BITS = 32
_POSITION_MASK = (1 << _PLACE_BITS) - 1
_U64 = (1 << 64) - 1
_ID_SIZE = 32
"""Bytes in a transaction id (a SHA-256 leaf hash)."""
SORT_CHUNK = 8192
"""Entries sorted in one call when a run is encoded (see :meth:`SegmentTxs.encode_run`)."""

if array("Q").itemsize != 8:  # pragma: no cover - every platform Python supports here
    raise ImportError("the transaction index needs 8-byte unsigned array items")


def tx_prefix(txid: bytes) -> int:
    """The part of a transaction id the index keys on (collisions are resolved by reading)."""
    return int.from_bytes(txid[:8], "big")


def tx_prefixes(txids: Sequence[bytes]) -> array[int]:
    """:func:`tx_prefix` of each id. When every id is 32 bytes (a SHA-256 leaf hash, as
    always in a ledger) the prefixes are every fourth big-endian u64 of the joined ids, taken
    in C: one at a time in Python they cost 0.4 us a transaction, 4 % of a PBFT backup's time
    at saturation."""
    if set(map(len, txids)) - {_ID_SIZE}:
        return array("Q", [tx_prefix(txid) for txid in txids])
    words = array("Q")
    words.frombytes(b"".join(txids))
    if sys.byteorder == "little":
        words.byteswap()
    return words[:: _ID_SIZE // 8]


class BadRun(Exception):
    """A run file that cannot be used; it is rebuilt from its segment."""


class SegmentTxs:
    """One segment's transactions as (prefix, place) entries in append order, from height
    ``start`` on (entries of heights ``first .. start - 1`` are not loaded yet)."""

    __slots__ = ("first", "places", "prefixes", "start")

    def __init__(self, first: int, start: int | None = None) -> None:
        self.first = first
        self.start = first if start is None else start
        self.prefixes = array("Q")
        self.places = array("Q")

    def __len__(self) -> int:
        return len(self.prefixes)

    @property
    def complete(self) -> bool:
        return self.start == self.first

    def add(self, height: int, leaves: Iterable[bytes]) -> None:
        """Add the transactions (leaf hashes, i.e. ids) of the block at ``height``."""
        offset = height - self.first
        if not 0 <= offset <= _POSITION_MASK:
            raise ValueError(f"height {height} does not fit a segment starting at {self.first}")
        leaves = leaves if isinstance(leaves, list | tuple) else list(leaves)
        count = len(leaves)
        if count > _POSITION_MASK:
            raise ValueError(f"{count} transactions do not fit a block's positions")
        base = offset << _PLACE_BITS
        self.prefixes.extend(tx_prefixes(leaves))
        self.places.extend(range(base, base + count))

    def joined(self, later: SegmentTxs) -> SegmentTxs:
        """These entries (the segment's first heights) followed by ``later``'s, as a new
        index; neither is changed (another thread may be reading ``later``)."""
        if later.first != self.first or not self.complete:
            raise ValueError("the earlier entries must start the same segment")
        out = SegmentTxs(self.first)
        out.prefixes = self.prefixes + later.prefixes
        out.places = self.places + later.places
        return out

    def places_of(self, prefix: int) -> list[tuple[int, int]]:
        """``(height, position)`` of every entry with ``prefix``."""
        out: list[tuple[int, int]] = []
        i = -1
        while True:
            try:
                i = self.prefixes.index(prefix, i + 1)
            except ValueError:
                return out
            out.append(self._unpack(self.places[i]))

    def _unpack(self, place: int) -> tuple[int, int]:
        return self.first + (place >> _PLACE_BITS), place & _POSITION_MASK

    def encode_run(self, pause: Callable[[], None] | None = None) -> bytes:
        """The run file of these entries (they must cover the whole segment); ``pause`` is
        called between chunks of the work (a caller that wants it spread over time sleeps)."""
        if not self.complete:
            raise ValueError("a run is written only for a whole segment")
        # Ascending prefix, equal prefixes in append order (places grow with it): the key
        # prefix << 64 | place sorts both at once. A run is encoded on a worker thread beside a
        # replica's event loop, and one sort of a whole segment (200,000 entries for 64 MiB of
        # 256-B transactions) would hold the GIL, and stall the loop, for 150-500 ms. Sorting
        # chunks and merging them in Python code lets the loop run every few milliseconds.
        own_prefixes, own_places = self.prefixes, self.places
        chunks: list[list[int]] = []
        for start in range(0, len(own_prefixes), SORT_CHUNK):
            end = start + SORT_CHUNK
            keys = [
                p << 64 | q
                for p, q in zip(own_prefixes[start:end], own_places[start:end], strict=True)
            ]
            keys.sort()
            chunks.append(keys)
            if pause is not None:
                pause()
        prefixes, places = array("Q"), array("Q")
        add_prefix, add_place = prefixes.append, places.append
        for done, key in enumerate(heapq.merge(*chunks), start=1):
            add_prefix(key >> 64)
            add_place(key & _U64)
            if pause is not None and done % SORT_CHUNK == 0:
                pause()
        if sys.byteorder == "little":
            prefixes.byteswap()
            places.byteswap()
        body = (
            RUN_HEADER.pack(RUN_MAGIC, self.first, len(prefixes))
            + prefixes.tobytes()
            + places.tobytes()
        )
        return body + zlib.crc32(body).to_bytes(_CRC, "big")


def run_name(first: int) -> str:
    return f"{first:020d}{RUN_SUFFIX}"


def check_run(read: Callable[[int, int], bytes], size: int, first: int, *, crc: bool) -> int:
    """The entry count of the run file of the segment starting at ``first``; :class:`BadRun`
    saying why when it is not usable. ``crc`` also checks every byte (done once per open)."""
    head = read(0, RUN_HEADER.size)
    if len(head) < RUN_HEADER.size:
        raise BadRun("truncated header")
    magic, found, count = RUN_HEADER.unpack(head)
    if magic != RUN_MAGIC:
        raise BadRun("bad magic")
    if found != first:
        raise BadRun(f"header says first height {found}, the segment starts at {first}")
    if size != RUN_HEADER.size + 16 * count + _CRC:
        raise BadRun(f"{size} bytes, {count} entries need {RUN_HEADER.size + 16 * count + _CRC}")
    if crc:
        value, pos, end = 0, 0, size - _CRC
        while pos < end:
            chunk = read(pos, min(1 << 20, end - pos))
            if not chunk:
                raise BadRun("short read")
            value = zlib.crc32(chunk, value)
            pos += len(chunk)
        if read(end, _CRC) != value.to_bytes(_CRC, "big"):
            raise BadRun("checksum mismatch")
    return count


def run_places(
    read: Callable[[int, int], bytes], first: int, count: int, prefix: int
) -> list[tuple[int, int]]:
    """``(height, position)`` of every entry with ``prefix`` in a checked run file."""

    def prefix_at(i: int) -> int:
        return int.from_bytes(read(RUN_HEADER.size + 8 * i, 8), "big")

    lo, hi = 0, count
    while lo < hi:  # leftmost entry >= prefix
        mid = (lo + hi) // 2
        if prefix_at(mid) < prefix:
            lo = mid + 1
        else:
            hi = mid
    out: list[tuple[int, int]] = []
    places_at = RUN_HEADER.size + 8 * count
    while lo < count and prefix_at(lo) == prefix:
        place = int.from_bytes(read(places_at + 8 * lo, 8), "big")
        out.append((first + (place >> _PLACE_BITS), place & _POSITION_MASK))
        lo += 1
    return out

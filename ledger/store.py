"""The on-disk ledger: append-only segment files of checksummed records, group-committed.

Theory of operation
-------------------
A ledger directory holds::

    LEDGER                          manifest: format and chain id (TOML)
    LOCK                            held (flock) by the one process that writes
    00000000000000000001.seg        segment files, named by the height of their first block
    00000000000000004711.seg
    00000000000000000001.txi        transaction index of a sealed segment (see ledger.txindex)
    index.sqlite                    derived index of heights; deleted or stale, it is rebuilt

A segment starts with a 16-byte header (``b"BFTLSEG1"``, first height as u64 big-endian) and
holds records back to back. A record is ``b"BFTR"``, the payload length (u32 BE), a CRC-32 of
the length bytes and the payload (u32 BE), then the payload: one canonically encoded
:class:`~ledger.block.Block`. ``docs/ledger-format.md`` gives every byte.

Writes are group commits: :meth:`LedgerStore.append` checks a block (height, chain, hash link,
Merkle root) and queues it; :meth:`LedgerStore.sync` writes all queued records with one write and
one ``fsync``. Only synced blocks count: ``height`` is the durable height, and reads serve nothing
above it. Before a new segment is created the current one is fsynced, and the directory is fsynced
after, so a crash never leaves a torn record followed by a later segment. A failed write or fsync
poisons the store (the kernel may have dropped the dirty pages): it must be reopened, which
rescans the tail.

Opening checks the checksum of every record the index knows (bits rot where nothing rewrites
them; a record found bad there is corruption in the middle, below), then scans every record after
the last indexed one. At the first record that fails (truncated, bad magic, bad checksum,
undecodable, wrong chain, broken link or Merkle root) the store decides:

* nothing valid follows it in the directory: a *torn tail*. The file is truncated to the last good
  record, and a warning says how many bytes were dropped and why;
* a valid record or a later segment follows it: *corruption in the middle*. Nothing is truncated;
  the store opens with :attr:`LedgerStore.damage` set, serves only the heights before it, and
  refuses to append until :meth:`LedgerStore.truncate_after` is called (a replica then fetches the
  missing blocks again from its peers).

Every read re-checks the checksum, the block hash recorded by the index and the Merkle root; a
record that fails is reported with its height and place, and nothing at or above it is served.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import struct
import tomllib
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from crypto import Committee, MerkleTree
from crypto.codec import CodecError
from crypto.keys import check_chain_id
from crypto.merkle import leaf_hashes, root_from_leaf_hashes

from .block import Block, genesis_hash
from .durable import fsync_dir, replace_durably
from .errors import BlockError, CorruptRecord, StoreError
from .receipt import Receipt
from .txindex import RUN_SUFFIX, BadRun, SegmentTxs, check_run, run_name, run_places, tx_prefix
from .verify import ChainSummary, CommitteeSchedule, verify_block

log = logging.getLogger(__name__)

FORMAT = "bft-ledger-v1"
SEGMENT_MAGIC = b"BFTLSEG1"
SEGMENT_HEADER = struct.Struct(">8sQ")
RECORD_MAGIC = b"BFTR"
RECORD_HEADER = struct.Struct(">4sII")
MAX_RECORD = 1 << 30
DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
_INDEX_BATCH = 1000
INDEX_EVERY_BLOCKS = 64
"""Index rows are committed to SQLite every this many blocks (and on close). The index is
derived: rows not yet committed when the process dies are rebuilt from the segments on open."""
_BUILT_RUNS = 4  # transaction indexes built in memory for segments without a usable run file
_SEGMENT_NAME = re.compile(r"[0-9]{20}\.seg")
_OPEN_READERS = 8


def segment_name(first_height: int) -> str:
    return f"{first_height:020d}.seg"


def frame_record(payload: bytes) -> bytes:
    """The bytes of one record holding ``payload``."""
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "big")))
    return RECORD_HEADER.pack(RECORD_MAGIC, length, crc) + payload


@dataclass(frozen=True, slots=True)
class Damage:
    """Where the first unusable record in the middle of the ledger is, and why."""

    height: int
    segment: str
    offset: int
    reason: str

    def error(self) -> CorruptRecord:
        return CorruptRecord(self.height, self.segment, self.offset, self.reason)


@dataclass(frozen=True, slots=True)
class StoreStats:
    height: int
    segments: int
    bytes_on_disk: int
    pending_blocks: int
    syncs: int
    bytes_written: int


@dataclass(slots=True)
class IndexBatch:
    """Index entries taken out of the store by :meth:`LedgerStore.detach_index`, to be written by
    :meth:`LedgerStore.write_index` (on a thread of the caller's choosing)."""

    blocks: dict[int, tuple[int, int, int, int, bytes]]
    runs: list[SegmentTxs]
    """Transaction indexes of segments sealed since the last batch: one run file each."""
    rows: int


class _BadRecord(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason
        super().__init__(reason)


def _read_record(fd: int, offset: int, file_size: int) -> bytes:
    """The payload of the record at ``offset``, or :class:`_BadRecord` with the reason."""
    if offset + RECORD_HEADER.size > file_size:
        raise _BadRecord(offset, "truncated record header")
    head = os.pread(fd, RECORD_HEADER.size, offset)
    magic, length, crc = RECORD_HEADER.unpack(head)
    if magic != RECORD_MAGIC:
        raise _BadRecord(offset, "bad record magic")
    if length > MAX_RECORD:
        raise _BadRecord(offset, f"record length {length} is implausible")
    if offset + RECORD_HEADER.size + length > file_size:
        raise _BadRecord(offset, "truncated record")
    payload = os.pread(fd, length, offset + RECORD_HEADER.size)
    if len(payload) != length:
        raise _BadRecord(offset, "short read")
    if zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "big"))) != crc:
        raise _BadRecord(offset, "checksum mismatch")
    return payload


def _declared_end(fd: int, offset: int, file_size: int) -> int | None:
    """Where the record at ``offset`` says it ends, when its 12-byte header is there and has the
    record magic; ``None`` when the header itself is unreadable."""
    if offset + RECORD_HEADER.size > file_size:
        return None
    magic, length, _ = RECORD_HEADER.unpack(os.pread(fd, RECORD_HEADER.size, offset))
    if magic != RECORD_MAGIC:
        return None
    return offset + RECORD_HEADER.size + length


def _valid_record_after(fd: int, start: int, file_size: int, chain_id: str, above: int) -> bool:
    """True when a record at or after ``start`` holds a block of ``chain_id`` above height
    ``above`` with a good checksum: evidence that something durable follows."""
    window = 1 << 20
    pos = start
    while pos < file_size:
        chunk = os.pread(fd, min(window + 3, file_size - pos), pos)
        i = chunk.find(RECORD_MAGIC)
        while i != -1:
            try:
                payload = _read_record(fd, pos + i, file_size)
                block = Block.decode(payload, max_size=MAX_RECORD)
                if block.header.chain_id == chain_id and block.height > above:
                    return True
            except (_BadRecord, CodecError):
                pass
            i = chunk.find(RECORD_MAGIC, i + 1)
        pos += window
    return False


def _decode_block(payload: bytes, offset: int) -> tuple[Block, list[bytes]]:
    try:
        block = Block.decode(payload, max_size=MAX_RECORD)
    except CodecError as exc:
        raise _BadRecord(offset, f"undecodable block: {exc}") from None
    leaves = leaf_hashes(block.txs)
    if root_from_leaf_hashes(leaves) != block.header.tx_root:
        raise _BadRecord(offset, "Merkle root does not match the transactions")
    return block, leaves


class _Index:
    """The derived index of heights in SQLite: height -> place and hash. (Transactions are
    indexed per segment, see :mod:`ledger.txindex`; the table of an older layout is dropped.)"""

    def __init__(self, path: Path | None) -> None:
        target = ":memory:" if path is None else str(path)
        self.db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # The index is derived from fsynced segments: losing its newest rows in a power cut only
        # means rescanning them, so it never waits for its own fsync.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS blocks(
                height INTEGER PRIMARY KEY, segment INTEGER NOT NULL, offset INTEGER NOT NULL,
                length INTEGER NOT NULL, hash BLOB NOT NULL);
            DROP TABLE IF EXISTS txs;
            """
        )

    def last(self) -> tuple[int, int, int, int, bytes] | None:
        return self.db.execute(
            "SELECT height, segment, offset, length, hash FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()

    def locate(self, height: int) -> tuple[int, int, int, bytes] | None:
        return self.db.execute(
            "SELECT segment, offset, length, hash FROM blocks WHERE height = ?", (height,)
        ).fetchone()

    def add(self, blocks: list[tuple[int, int, int, int, bytes]]) -> None:
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?)", blocks)

    def truncate_above(self, height: int) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM blocks WHERE height > ?", (height,))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_manifest(directory: Path) -> str:
    """The chain id recorded in a ledger directory's manifest."""
    path = Path(directory) / "LEDGER"
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{directory}: not a ledger (no LEDGER manifest)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: unreadable manifest: {exc}") from None
    if doc.get("format") != FORMAT:
        raise StoreError(f"{path}: format is {doc.get('format')!r}, expected {FORMAT!r}")
    chain_id = doc.get("chain_id")
    try:
        return check_chain_id(chain_id)  # type: ignore[arg-type]
    except ValueError as exc:
        raise StoreError(f"{path}: {exc}") from None


class LedgerStore:
    """An open ledger directory. Not thread-safe: one owner drives it."""

    def __init__(self) -> None:  # use LedgerStore.open
        raise TypeError("use LedgerStore.open(directory, chain_id=...)")

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        chain_id: str | None = None,
        create: bool = True,
        readonly: bool = False,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> LedgerStore:
        """Open (or create) the ledger in ``directory`` and recover its tail.

        ``chain_id`` must match the manifest; ``None`` accepts the manifest's (for tools).
        ``readonly`` changes no file: a torn tail is ignored rather than truncated, and the index
        is built in memory.
        """
        self = object.__new__(cls)
        self.directory = Path(directory)
        self.readonly = readonly
        self.segment_size = max(segment_size, 4096)
        self._lock_fd: int | None = None
        self._readers: OrderedDict[int, int] = OrderedDict()
        self._writer: tuple[int, int] | None = None  # (segment first height, fd)
        self._pending: list[tuple[Block, bytes, bytes, list[bytes]]] = []
        self._failed: BaseException | None = None
        self._syncs = 0
        self._bytes_written = 0
        self.damage: Damage | None = None
        self.tail_dropped = 0
        self._index: _Index | None = None
        # Index rows of synced blocks not yet committed to SQLite (bounded by
        # INDEX_EVERY_BLOCKS, or with background_index by how often the owner detaches them).
        self._deferred_blocks: dict[int, tuple[int, int, int, int, bytes]] = {}
        # Transaction indexes: the open segment's in memory (bounded by the segment size),
        # sealed segments' waiting for their run file, runs checked since open, and indexes
        # built in memory for segments whose run file is missing or bad (LRU).
        self._open_txs: SegmentTxs | None = None
        self._sealed: dict[int, SegmentTxs] = {}
        self._runs_ok: set[int] = set()
        self._built: OrderedDict[int, SegmentTxs] = OrderedDict()
        self.background_index = False
        """When set, :meth:`sync` leaves the index rows deferred: the owner moves them out with
        :meth:`detach_index` and commits them with :meth:`write_index` off its commit path."""
        self._flushing: IndexBatch | None = None
        self._index_writer: _Index | None = None
        try:
            self._open(chain_id, create)
        except BaseException:
            self.close()
            raise
        return self

    def _open(self, chain_id: str | None, create: bool) -> None:
        manifest = self.directory / "LEDGER"
        if not manifest.exists():
            if self.readonly or not create:
                raise StoreError(f"{self.directory}: not a ledger (no LEDGER manifest)")
            if chain_id is None:
                raise StoreError("a chain id is needed to create a ledger")
            check_chain_id(chain_id)
            self.directory.mkdir(parents=True, exist_ok=True)
            replace_durably(manifest, f'format = "{FORMAT}"\nchain_id = "{chain_id}"\n'.encode())
        found = read_manifest(self.directory)
        if chain_id is not None and found != chain_id:
            raise StoreError(f"{self.directory}: ledger of chain {found!r}, not {chain_id!r}")
        self.chain_id = found
        if not self.readonly:
            self._lock()
        self._segments = self._list_segments()
        self._index = self._open_index()
        self._recover()

    def _lock(self) -> None:
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.directory}: ledger is in use by another process") from None
        self._lock_fd = fd

    def _list_segments(self) -> list[int]:
        firsts = []
        for entry in self.directory.iterdir():
            if _SEGMENT_NAME.fullmatch(entry.name):
                firsts.append(int(entry.name[:20]))
        return sorted(firsts)

    def _open_index(self) -> _Index:
        if self.readonly:
            return _Index(None)
        path = self.directory / "index.sqlite"
        try:
            index = _Index(path)
            index.db.execute("SELECT count(*) FROM blocks LIMIT 1").fetchone()
            return index
        except sqlite3.DatabaseError as exc:
            log.warning("%s: index unreadable (%s); rebuilding it from the segments", path, exc)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return _Index(path)

    def _seg_path(self, first: int) -> Path:
        return self.directory / segment_name(first)

    def _recover(self) -> None:
        index = self._idx
        self.height = 0
        self.last_hash = genesis_hash(self.chain_id)
        start: tuple[int, int] | None = None  # (segment, offset) to scan from
        last = index.last()
        if last is not None:
            height, seg, off, length, block_hash = last
            if self._indexed_record_ok(height, seg, off, length, block_hash):
                self.height, self.last_hash = height, block_hash
                start = (seg, off + RECORD_HEADER.size + length)
            else:
                log.warning(
                    "%s: index disagrees with the segments at height %d; rebuilding the index",
                    self.directory,
                    height,
                )
                index.truncate_above(0)
        if start is not None:
            self._check_indexed_records(start)
        if self.damage is None:
            self._scan_from(start)
        self._open_txs = None
        if self._segments and self.damage is None:
            last = self._segments[-1]
            # Its entries are loaded at the first lookup, or by the writer when it is sealed.
            self._open_txs = SegmentTxs(last, start=max(self.height + 1, last))
        if not self.readonly:
            self._remove_runs(lambda seg: seg not in self._segments[:-1])

    def _remove_runs(self, stale: Callable[[int], bool]) -> None:
        """Delete the run files (and leftovers of writing one) of segments ``stale`` picks: the
        open segment's, whose run would miss what is appended, and those of segments gone."""
        for entry in self.directory.iterdir():
            name = entry.name
            if name.endswith(".tmp"):
                name = name[:-4]
            if (
                name.endswith(RUN_SUFFIX)
                and _SEGMENT_NAME.fullmatch(name[: -len(RUN_SUFFIX)] + ".seg")
                and (entry.name != name or stale(int(name[:20])))
            ):
                entry.unlink(missing_ok=True)

    def _check_indexed_records(self, upto: tuple[int, int]) -> None:
        """Check the checksum of every record before ``upto`` (segment, offset): the index
        vouches for where they are, not for their bytes, which may have rotted since they were
        written. The first bad one is damage in the middle (see the module's docstring)."""
        for seg in self._segments:
            if seg > upto[0]:
                return
            fd = self._reader(seg)
            size = os.fstat(fd).st_size
            end = upto[1] if seg == upto[0] else size
            head = os.pread(fd, SEGMENT_HEADER.size, 0)
            if len(head) < SEGMENT_HEADER.size or SEGMENT_HEADER.unpack(head) != (
                SEGMENT_MAGIC,
                seg,
            ):
                self._damage_before_index(seg, seg, 0, "bad segment header")
                return
            pos, height = SEGMENT_HEADER.size, seg
            while pos < end:
                try:
                    payload = _read_record(fd, pos, size)
                except _BadRecord as bad_record:
                    self._damage_before_index(height, seg, pos, bad_record.reason)
                    return
                pos += RECORD_HEADER.size + len(payload)
                height += 1

    def _damage_before_index(self, height: int, seg: int, offset: int, reason: str) -> None:
        self.damage = Damage(height, segment_name(seg), offset, reason)
        self.height, self.last_hash = 0, genesis_hash(self.chain_id)
        if height > 1:
            row = self._idx.locate(height - 1)
            if row is not None:
                self.height, self.last_hash = height - 1, row[3]
        log.error(
            "%s: %s; serving heights up to %d only until the ledger is repaired",
            self.directory,
            self.damage.error(),
            self.height,
        )

    def _indexed_record_ok(
        self, height: int, seg: int, off: int, length: int, block_hash: bytes
    ) -> bool:
        if seg not in self._segments:
            return False
        try:
            fd = self._reader(seg)
            payload = _read_record(fd, off, os.fstat(fd).st_size)
            block, _ = _decode_block(payload, off)
        except (_BadRecord, OSError):
            return False
        return len(payload) == length and block.height == height and block.hash() == block_hash

    def _scan_from(self, start: tuple[int, int] | None) -> None:
        """Index every good record after ``start``; handle the first bad one."""
        if start is None:
            segs = list(self._segments)
            offset = None
        else:
            segs = [s for s in self._segments if s >= start[0]]
            offset = start[1]
        batch_blocks: list[tuple[int, int, int, int, bytes]] = []

        def flush() -> None:
            if batch_blocks:
                self._idx.add(batch_blocks)
                batch_blocks.clear()

        for n, seg in enumerate(segs):
            fd = self._reader(seg)
            size = os.fstat(fd).st_size
            if offset is None:
                bad = self._check_segment_header(fd, seg, size)
                if bad is not None:
                    flush()
                    self._bad_record(seg, 0, bad, later=segs[n + 1 :])
                    return
                pos = SEGMENT_HEADER.size
            else:
                pos, offset = offset, None
            while pos < size:
                try:
                    payload = _read_record(fd, pos, size)
                    block, _ = _decode_block(payload, pos)
                    self._check_link(block, pos)
                except _BadRecord as bad_record:
                    flush()
                    self._bad_record(seg, pos, bad_record.reason, later=segs[n + 1 :])
                    return
                block_hash = block.hash()
                h = block.height
                batch_blocks.append((h, seg, pos, len(payload), block_hash))
                self.height, self.last_hash = h, block_hash
                pos += RECORD_HEADER.size + len(payload)
                if len(batch_blocks) >= _INDEX_BATCH:
                    flush()
        flush()

    def _check_segment_header(self, fd: int, seg: int, size: int) -> str | None:
        if size < SEGMENT_HEADER.size:
            return "truncated segment header"
        magic, first = SEGMENT_HEADER.unpack(os.pread(fd, SEGMENT_HEADER.size, 0))
        if magic != SEGMENT_MAGIC:
            return "bad segment magic"
        if first != seg:
            return f"segment header says first height {first}"
        if first != self.height + 1:
            return f"segment starts at height {first}, expected {self.height + 1}"
        return None

    def _check_link(self, block: Block, offset: int) -> None:
        header = block.header
        if header.chain_id != self.chain_id:
            raise _BadRecord(offset, f"block of chain {header.chain_id!r}")
        if header.height != self.height + 1:
            raise _BadRecord(
                offset, f"block claims height {header.height}, expected {self.height + 1}"
            )
        if header.prev_hash != self.last_hash:
            raise _BadRecord(offset, "previous-hash link is broken")

    def _bad_record(self, seg: int, offset: int, reason: str, later: list[int]) -> None:
        fd = self._reader(seg)
        size = os.fstat(fd).st_size
        # Is anything durable after the bad record? A record whose intact header says it runs
        # past the end of the file was cut short: a torn write. Otherwise search from where it
        # says it ends (so its own payload, which a client chose, cannot pass for a record), or
        # from the next byte when its header is unreadable.
        end = _declared_end(fd, offset, size) if offset >= SEGMENT_HEADER.size else None
        if later:
            follows = True
        elif end is not None and end > size:
            follows = False
        else:
            start = end if end is not None else offset + 1
            follows = _valid_record_after(fd, start, size, self.chain_id, self.height)
        name = segment_name(seg)
        if follows:
            self.damage = Damage(self.height + 1, name, offset, reason)
            log.error(
                "%s: %s; serving heights up to %d only until the ledger is repaired",
                self.directory,
                self.damage.error(),
                self.height,
            )
            return
        dropped = size - offset
        self.tail_dropped = dropped
        if self.readonly:
            log.warning(
                "%s: ignoring a torn tail of %d bytes at %s:%d (%s)",
                self.directory, dropped, name, offset, reason,
            )  # fmt: skip
            return
        log.warning(
            "%s: truncating a torn tail of %d bytes at %s:%d (%s); last good height is %d",
            self.directory, dropped, name, offset, reason, self.height,
        )  # fmt: skip
        self._close_reader(seg)
        if offset < SEGMENT_HEADER.size:
            self._seg_path(seg).unlink()
            self._segments.remove(seg)
        else:
            os.truncate(self._seg_path(seg), offset)
            with open(self._seg_path(seg), "rb+") as fh:
                os.fsync(fh.fileno())
        fsync_dir(self.directory)

    # ------------------------------------------------------------------ file handles

    @property
    def _idx(self) -> _Index:
        if self._index is None:
            raise StoreError("ledger store is closed")
        return self._index

    def _reader(self, seg: int) -> int:
        fd = self._readers.get(seg)
        if fd is not None:
            self._readers.move_to_end(seg)
            return fd
        fd = os.open(self._seg_path(seg), os.O_RDONLY)
        self._readers[seg] = fd
        while len(self._readers) > _OPEN_READERS:
            _, old = self._readers.popitem(last=False)
            os.close(old)
        return fd

    def _close_reader(self, seg: int) -> None:
        fd = self._readers.pop(seg, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Close files and release the lock. Queued, unsynced blocks are discarded."""
        self._pending.clear()
        if self._index is not None and self._failed is None:
            with contextlib.suppress(StoreError):
                self.flush_index()
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        if self._writer is not None:
            os.close(self._writer[1])
            self._writer = None
        if self._index_writer is not None:
            self._index_writer.close()
            self._index_writer = None
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    @property
    def tip(self) -> tuple[int, bytes]:
        """Height and hash of the last block, counting queued (unsynced) ones."""
        if self._pending:
            block, _, block_hash, _ = self._pending[-1]
            return block.height, block_hash
        return self.height, self.last_hash

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.directory}: opened read-only")
        if self._failed is not None:
            raise StoreError(
                f"{self.directory}: an earlier write failed ({self._failed}); reopen the ledger"
            )
        if self.damage is not None:
            raise StoreError(f"{self.directory}: {self.damage.error()}; repair it before appending")
        if self._index is None:
            raise StoreError("ledger store is closed")

    def append(self, block: Block) -> None:
        """Check ``block`` against the tip and queue it; :meth:`sync` makes it durable."""
        self._writable()
        tip_height, tip_hash = self.tip
        header = block.header
        if header.chain_id != self.chain_id:
            raise BlockError(header.height, f"block of chain {header.chain_id!r}")
        if header.height != tip_height + 1:
            raise BlockError(header.height, f"expected height {tip_height + 1}")
        if header.prev_hash != tip_hash:
            raise BlockError(header.height, "previous-hash link is broken")
        tree = MerkleTree(block.txs)  # the block's tree is hashed once per replica (crypto.merkle)
        if tree.root != header.tx_root:
            raise BlockError(header.height, "Merkle root does not match the transactions")
        leaves = tree.levels[0]  # shared with the tree: read only
        payload = block.encode()
        if len(payload) > MAX_RECORD:
            raise BlockError(
                header.height,
                f"block of {len(payload)} bytes exceeds the record limit of {MAX_RECORD}",
            )
        self._pending.append((block, frame_record(payload), header.hash(), leaves))

    def extend(self, blocks: list[Block]) -> int:
        """Append ``blocks`` and sync them with one fsync; returns the durable height."""
        for block in blocks:
            self.append(block)
        return self.sync()

    def sync(self) -> int:
        """Write every queued block and fsync once (group commit). Returns the durable height."""
        self._writable()
        if not self._pending:
            return self.height
        pending, self._pending = self._pending, []
        try:
            rows = self._write(pending)
        except OSError as exc:
            self._failed = exc
            log.error("%s: ledger write failed: %s", self.directory, exc)
            raise StoreError(f"{self.directory}: ledger write failed: {exc}") from exc
        self.height, self.last_hash = pending[-1][0].height, pending[-1][2]
        for row, (_, _, _, leaves) in zip(rows, pending, strict=True):
            height, seg = row[0], row[1]
            self._deferred_blocks[height] = row
            txs = self._open_txs
            if txs is None or txs.first != seg:
                if txs is not None:
                    self._sealed[txs.first] = txs
                txs = self._open_txs = SegmentTxs(seg)
            txs.add(height, leaves)
        if not self.background_index and (
            len(self._deferred_blocks) >= INDEX_EVERY_BLOCKS or self._sealed
        ):
            self.flush_index()
        return self.height

    @property
    def index_lag(self) -> int:
        """Index entries of durable blocks not yet written: a row per block, and an entry per
        transaction of each sealed segment whose run file is not written yet."""
        batch = self._flushing
        return (
            len(self._deferred_blocks)
            + sum(len(run) for run in self._sealed.values())
            + (batch.rows if batch is not None else 0)
        )

    def detach_index(self) -> IndexBatch | None:
        """Move the index entries waiting into a batch for :meth:`write_index`; ``None`` when
        there are none or a detached batch is not written yet. Call it where :meth:`sync` is
        called (never at the same time); the entries stay visible to reads until written."""
        if self._flushing is not None or not (self._deferred_blocks or self._sealed):
            return None
        runs = list(self._sealed.values())
        batch = IndexBatch(
            self._deferred_blocks, runs, len(self._deferred_blocks) + sum(map(len, runs))
        )
        self._flushing = batch
        self._deferred_blocks, self._sealed = {}, {}
        return batch

    def write_index(self, batch: IndexBatch, pause: Callable[[], None] | None = None) -> None:
        """Write a detached batch: a run file per sealed segment, and the block rows through a
        database connection of its own, so it may run on another thread while this store
        appends, syncs and reads (SQLite's WAL mode lets the readers go on). The cost is that
        of the batch, whatever the size of the ledger."""
        if self._flushing is not batch:
            raise StoreError("this index batch is not the one detached from the store")
        if self.readonly:
            raise StoreError(f"{self.directory}: opened read-only")
        if self._index is None:
            raise StoreError("ledger store is closed")
        for run in batch.runs:
            self._write_run(run, pause)
        self._add_block_rows(batch.blocks, own_connection=True)
        # Written: readers find the entries on disk from now on.
        self._flushing = None

    def flush_index(self) -> None:
        """Write the index entries waiting (done every few dozen blocks, when a segment is
        sealed, and on close), a detached batch not yet written first. Not while
        :meth:`write_index` runs."""
        if self._flushing is not None:
            self.write_index(self._flushing)
        for run in list(self._sealed.values()):
            self._write_run(run)
            del self._sealed[run.first]
        if self._deferred_blocks:
            self._add_block_rows(self._deferred_blocks, own_connection=False)
            self._deferred_blocks.clear()

    def _add_block_rows(
        self, rows: dict[int, tuple[int, int, int, int, bytes]], *, own_connection: bool
    ) -> None:
        """Commit block rows to SQLite, through the writer's own connection (for another
        thread) or the store's. A failure poisons the store: the blocks are durable, only the
        derived index lags, and reopening rebuilds it."""
        try:
            if not own_connection:
                index = self._idx
            elif self._index_writer is None:
                index = self._index_writer = _Index(self.directory / "index.sqlite")
            else:
                index = self._index_writer
            index.add(list(rows.values()))
        except sqlite3.Error as exc:
            self._failed = exc
            raise StoreError(
                f"{self.directory}: index update failed: {exc}; reopen the ledger"
            ) from exc

    def _write_run(self, txs: SegmentTxs, pause: Callable[[], None] | None = None) -> None:
        """Write the run file of a sealed segment (any thread: it touches only its own file).
        The entries of heights loaded late are read from the segment first. A run that cannot
        be written is logged and left to be rebuilt when a lookup needs it."""
        if not txs.complete:
            earlier, reached = self._scan_segment_txs(txs.first, txs.start)
            if reached != txs.start - 1:
                return  # logged by the scan; the segment is damaged below its end
            txs = earlier.joined(txs)
        path = self.directory / run_name(txs.first)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(txs.encode_run(pause))
            # Not fsynced: a run lost or torn in a power cut fails its checks and is rebuilt.
            os.replace(tmp, path)
        except OSError as exc:
            log.error("%s: cannot write the transaction index: %s", path, exc)
            tmp.unlink(missing_ok=True)

    def _scan_segment_txs(self, seg: int, stop: int | None = None) -> tuple[SegmentTxs, int]:
        """The transaction index of segment ``seg`` read from its records (any thread: it opens
        the file itself), for heights below ``stop`` (default: to the durable height), and the
        last height read. A bad record ends the scan early, with a warning."""
        limit = self.height if stop is None else min(stop - 1, self.height)
        txs = SegmentTxs(seg)
        height = seg - 1
        path = self._seg_path(seg)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            log.warning("%s: cannot index its transactions: %s", path, exc)
            return txs, height
        try:
            size = os.fstat(fd).st_size
            pos = SEGMENT_HEADER.size
            while height < limit and pos < size:
                payload = _read_record(fd, pos, size)
                block, leaves = _decode_block(payload, pos)
                if block.height != height + 1:
                    raise _BadRecord(pos, f"block claims height {block.height}")
                height += 1
                txs.add(height, leaves)
                pos += RECORD_HEADER.size + len(payload)
        except _BadRecord as bad:
            log.warning("%s:%d: transactions indexed up to height %d only: %s",
                        path, bad.offset, height, bad.reason)  # fmt: skip
        except OSError as exc:
            log.warning("%s: transactions indexed up to height %d only: %s", path, height, exc)
        finally:
            os.close(fd)
        return txs, height

    def _locate(self, height: int) -> tuple[int, int, int, bytes] | None:
        row = self._deferred_blocks.get(height)
        if row is None:
            batch = self._flushing
            if batch is not None:
                row = batch.blocks.get(height)
        if row is not None:
            return row[1:]
        return self._idx.locate(height)

    def _write(
        self, pending: list[tuple[Block, bytes, bytes, list[bytes]]]
    ) -> list[tuple[int, int, int, int, bytes]]:
        """Write and fsync the records; the index row (height, segment, offset, length, hash)
        of each block."""
        rows: list[tuple[int, int, int, int, bytes]] = []
        if self._writer is not None:
            seg, fd = self._writer
        elif self._segments:
            seg, fd = self._open_writer(self._segments[-1])
        else:
            seg, fd = self._new_segment(pending[0][0].height)
        pos = os.fstat(fd).st_size
        chunks: list[bytes] = []
        for block, frame, block_hash, _ in pending:
            if pos + len(frame) > self.segment_size and pos > SEGMENT_HEADER.size:
                _write_all(fd, b"".join(chunks))
                os.fsync(fd)
                chunks.clear()
                seg, fd = self._new_segment(block.height)
                pos = SEGMENT_HEADER.size
            h = block.height
            rows.append((h, seg, pos, len(frame) - RECORD_HEADER.size, block_hash))
            chunks.append(frame)
            pos += len(frame)
        data = b"".join(chunks)
        _write_all(fd, data)
        os.fsync(fd)
        self._syncs += 1
        self._bytes_written += len(data)
        return rows

    def _open_writer(self, seg: int) -> tuple[int, int]:
        fd = os.open(self._seg_path(seg), os.O_WRONLY | os.O_APPEND)
        self._writer = (seg, fd)
        return self._writer

    def _new_segment(self, first: int) -> tuple[int, int]:
        if self._writer is not None:
            os.close(self._writer[1])
            self._writer = None
        path = self._seg_path(first)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, SEGMENT_HEADER.pack(SEGMENT_MAGIC, first))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        fsync_dir(self.directory)
        self._segments.append(first)
        self._writer = (first, fd)
        return self._writer

    def truncate_after(self, height: int) -> None:
        """Discard every block above ``height`` (repair after damage, or before a re-fetch)."""
        if self.readonly:
            raise StoreError(f"{self.directory}: opened read-only")
        if self._index is None:
            raise StoreError("ledger store is closed")
        if not 0 <= height <= self.height:
            raise StoreError(f"cannot truncate to {height}: durable height is {self.height}")
        self._pending.clear()
        if self._writer is not None:
            os.close(self._writer[1])
            self._writer = None
        self.flush_index()
        if height == 0:
            cut_seg, cut_at, new_hash = None, 0, genesis_hash(self.chain_id)
        else:
            row = self._idx.locate(height)
            if row is None:
                raise StoreError(f"height {height} is not indexed")
            cut_seg, off, length, new_hash = row
            cut_at = off + RECORD_HEADER.size + length
        for seg in list(self._segments):
            if cut_seg is None or seg > cut_seg:
                self._close_reader(seg)
                self._seg_path(seg).unlink()
                self._segments.remove(seg)
        if cut_seg is not None:
            self._close_reader(cut_seg)
            path = self._seg_path(cut_seg)
            os.truncate(path, cut_at)
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
        fsync_dir(self.directory)
        self._idx.truncate_above(height)
        gone = (lambda seg: True) if cut_seg is None else (lambda seg: seg >= cut_seg)
        self._remove_runs(gone)
        self._sealed = {s: run for s, run in self._sealed.items() if not gone(s)}
        self._runs_ok = {s for s in self._runs_ok if not gone(s)}
        for seg in [s for s in self._built if gone(s)]:
            del self._built[seg]
        self._open_txs = None if cut_seg is None else SegmentTxs(cut_seg, start=height + 1)
        log.warning("%s: truncated the ledger to height %d", self.directory, height)
        self.height, self.last_hash = height, new_hash
        self.damage = None
        self._failed = None
        self.tail_dropped = 0

    # ------------------------------------------------------------------ reading

    def get(self, height: int) -> Block:
        """The verified block at ``height``; raises :class:`CorruptRecord` if it fails a check."""
        if not 1 <= height <= self.height:
            raise StoreError(f"no block at height {height} (durable height is {self.height})")
        if self.damage is not None and height >= self.damage.height:
            raise self.damage.error()
        row = self._locate(height)
        if row is None:
            raise StoreError(f"height {height} is not indexed")
        seg, off, length, block_hash = row
        name = segment_name(seg)
        try:
            fd = self._reader(seg)
            payload = _read_record(fd, off, os.fstat(fd).st_size)
            if len(payload) != length:
                raise _BadRecord(off, "record length differs from the index")
            block, _ = _decode_block(payload, off)
            if block.height != height or block.hash() != block_hash:
                raise _BadRecord(off, "block hash differs from the one recorded at append")
        except _BadRecord as bad:
            self.damage = Damage(height, name, off, bad.reason)
            log.error("%s: %s", self.directory, self.damage.error())
            raise self.damage.error() from None
        except OSError as exc:
            raise StoreError(
                f"{self.directory}/{name}: cannot read height {height}: {exc}"
            ) from exc
        return block

    def blocks(self, start: int = 1, stop: int | None = None) -> Iterator[Block]:
        """Verified blocks from ``start`` up to and including ``stop`` (default: the tip)."""
        stop = self.height if stop is None else min(stop, self.height)
        for height in range(max(start, 1), stop + 1):
            yield self.get(height)

    def find_transaction(self, txid: bytes) -> tuple[int, int] | None:
        """``(height, position)`` of the transaction with id ``txid``, or ``None``."""
        for height, position in self._candidates(tx_prefix(txid)):
            if height > self.height:
                continue
            block = self.get(height)
            if position < len(block.txs) and leaf_hashes([block.txs[position]])[0] == txid:
                return height, position
        return None

    def _candidates(self, prefix: int) -> Iterator[tuple[int, int]]:
        """Places of the transactions whose id starts with ``prefix``, newest segment first
        (a lookup that finds its transaction reads no older run): from memory for the open
        segment and sealed ones not written yet, else from run files."""
        in_memory: dict[int, SegmentTxs] = {}
        if self._flushing is not None:
            in_memory.update((run.first, run) for run in self._flushing.runs)
        in_memory.update(self._sealed)
        txs = self._open_txs
        if txs is not None:
            if not txs.complete:
                earlier, reached = self._scan_segment_txs(txs.first, txs.start)
                if reached == txs.start - 1:
                    txs = self._open_txs = earlier.joined(txs)
            in_memory[txs.first] = txs
        for seg in reversed(self._segments):
            run = in_memory.get(seg)
            if run is not None and run.complete:
                yield from run.places_of(prefix)
            elif seg != self._segments[-1] or txs is None:
                yield from self._run_places(seg, prefix, rewrite=run is None)
            elif run is not None:  # the open segment, damaged below its loaded entries
                yield from run.places_of(prefix)

    def _run_places(self, seg: int, prefix: int, *, rewrite: bool) -> list[tuple[int, int]]:
        """Look ``prefix`` up in the run file of sealed segment ``seg``. A missing or bad run
        is rebuilt from the segment and kept in memory (the last few); written again too with
        ``rewrite``, when this store may write (not while the writer has it to write)."""
        built = self._built.get(seg)
        if built is not None:
            self._built.move_to_end(seg)
            return built.places_of(prefix)
        path = self.directory / run_name(seg)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        else:
            try:

                def read(offset: int, size: int) -> bytes:
                    return os.pread(fd, size, offset)

                count = check_run(read, os.fstat(fd).st_size, seg, crc=seg not in self._runs_ok)
                self._runs_ok.add(seg)
                return run_places(read, seg, count, prefix)
            except BadRun as bad:
                log.warning("%s: %s; indexing the segment again", path, bad)
            finally:
                os.close(fd)
        built, reached = self._scan_segment_txs(seg)
        complete = seg != self._segments[-1] and reached == self._next_first(seg) - 1
        if rewrite and complete and not self.readonly and self._failed is None:
            self._write_run(built)
        self._built[seg] = built
        while len(self._built) > _BUILT_RUNS:
            self._built.popitem(last=False)
        return built.places_of(prefix)

    def _next_first(self, seg: int) -> int:
        i = self._segments.index(seg)
        return self._segments[i + 1] if i + 1 < len(self._segments) else self.height + 1

    def receipt(self, txid: bytes) -> Receipt | None:
        """A receipt proving the transaction ``txid`` committed, or ``None`` if it is not here."""
        found = self.find_transaction(txid)
        if found is None:
            return None
        height, position = found
        block = self.get(height)
        return Receipt(
            header=block.header,
            certificate=block.certificate,
            tx=block.txs[position],
            index=position,
            path=MerkleTree(block.txs).proof(position),
        )

    def verify(
        self,
        committee: Committee | CommitteeSchedule | None = None,
        *,
        check_transactions: bool = False,
    ) -> ChainSummary:
        """Re-read every record from the segments (not the index) and verify the whole chain.

        Raises :class:`BlockError` or :class:`CorruptRecord` at the first bad height.
        """
        prev = genesis_hash(self.chain_id)
        height = 0
        txs = 0
        for seg in self._segments:
            fd = self._reader(seg)
            size = os.fstat(fd).st_size
            name = segment_name(seg)
            if size < SEGMENT_HEADER.size or SEGMENT_HEADER.unpack(
                os.pread(fd, SEGMENT_HEADER.size, 0)
            ) != (SEGMENT_MAGIC, seg):
                raise CorruptRecord(height + 1, name, 0, "bad segment header")
            pos = SEGMENT_HEADER.size
            while pos < size and height < self.height:
                try:
                    payload = _read_record(fd, pos, size)
                    block = Block.decode(payload, max_size=MAX_RECORD)
                except _BadRecord as bad:
                    raise CorruptRecord(height + 1, name, pos, bad.reason) from None
                except CodecError as exc:
                    raise CorruptRecord(
                        height + 1, name, pos, f"undecodable block: {exc}"
                    ) from None
                height += 1
                prev = verify_block(
                    block,
                    chain_id=self.chain_id,
                    height=height,
                    prev_hash=prev,
                    committee=committee,
                    check_transactions=check_transactions,
                )
                txs += len(block.txs)
                pos += RECORD_HEADER.size + len(payload)
        if self.damage is not None:
            raise self.damage.error()
        return ChainSummary(self.chain_id, height, prev, txs, committee is not None)

    def statistics(self) -> StoreStats:
        size = 0
        for seg in self._segments:
            with contextlib.suppress(OSError):
                size += self._seg_path(seg).stat().st_size
        return StoreStats(
            height=self.height,
            segments=len(self._segments),
            bytes_on_disk=size,
            pending_blocks=len(self._pending),
            syncs=self._syncs,
            bytes_written=self._bytes_written,
        )

"""The durable protocol log: what a core asked to persist, fsynced before anything is sent.

The file holds records framed exactly as ledger records are (``b"BFTR"``, length, CRC-32,
payload; see ``docs/ledger-format.md``), each payload one encoded record of the protocol's
message set. ``append`` writes and fsyncs; ``replace`` writes a new file, fsyncs it, renames it
over the old one and fsyncs the directory, so a crash leaves either the old log or the new one.
A torn tail (a crash during ``append``) is truncated on open: those records were never durable,
so no message that depended on them was sent.

Memory: the log holds on to the records it read at open only until the replica has rebuilt its
core from them (:meth:`ProtocolLog.take_loaded`); what is appended afterwards is on disk and
nowhere else (a Raft log compacts only every few thousand records, and each record may be a
block of up to 1 MiB).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

from crypto.codec import CodecError, Record, RecordUnion
from ledger.durable import replace_durably
from ledger.store import RECORD_HEADER, RECORD_MAGIC, frame_record

log = logging.getLogger(__name__)

FILE = "protocol.log"


class ProtocolLog:
    def __init__(self, directory: Path, union: RecordUnion) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / FILE
        self.union = union
        self.loaded: list[Record] = []
        """The records in the file when it was opened, for recovery (see :meth:`take_loaded`)."""
        self.count = 0
        """Records in the file now."""
        self.appends = 0
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        pos = 0
        while pos < len(data):
            head = data[pos : pos + RECORD_HEADER.size]
            if len(head) < RECORD_HEADER.size:
                break
            magic, length, crc = RECORD_HEADER.unpack(head)
            payload = data[pos + RECORD_HEADER.size : pos + RECORD_HEADER.size + length]
            if magic != RECORD_MAGIC or len(payload) != length:
                break
            if zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "big"))) != crc:
                break
            try:
                self.loaded.append(self.union.decode(payload))
            except CodecError:
                break
            pos += RECORD_HEADER.size + length
        if pos < len(data):
            log.warning(
                "%s: truncating %d bytes of torn or corrupt tail", self.path, len(data) - pos
            )
            os.truncate(self.path, pos)
        self.count = len(self.loaded)

    def take_loaded(self) -> list[Record]:
        """The records read at open, handed over once: the log keeps no reference to them."""
        loaded, self.loaded = self.loaded, []
        return loaded

    def append(self, records: Sequence[Record]) -> None:
        """Append ``records`` and fsync (blocking: call it off the event loop)."""
        if not records:
            return
        data = b"".join(frame_record(r.encode()) for r in records)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.count += len(records)
        self.appends += 1

    def replace(self, records: Sequence[Record]) -> None:
        """Make ``records`` the whole log, atomically and durably."""
        data = b"".join(frame_record(r.encode()) for r in records)
        replace_durably(self.path, data, mode=0o600)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        self.count = len(records)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

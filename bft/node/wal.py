"""The durable protocol log: what a core asked to persist, fsynced before anything is sent.

The file holds records framed exactly as ledger records are (``b"BFTR"``, length, CRC-32,
payload; see ``docs/ledger-format.md``), each payload one encoded record of the protocol's
message set. ``append`` writes and fsyncs; ``replace`` writes a new file, fsyncs it, renames it
over the old one and fsyncs the directory, so a crash leaves either the old log or the new one.
A torn tail (a crash during ``append``) is truncated on open: those records were never durable,
so no message that depended on them was sent.
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
        self.records: list[Record] = []
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
                self.records.append(self.union.decode(payload))
            except CodecError:
                break
            pos += RECORD_HEADER.size + length
        if pos < len(data):
            log.warning(
                "%s: truncating %d bytes of torn or corrupt tail", self.path, len(data) - pos
            )
            os.truncate(self.path, pos)

    def append(self, records: Sequence[Record]) -> None:
        """Append ``records`` and fsync (blocking: call it off the event loop)."""
        if not records:
            return
        data = b"".join(frame_record(r.encode()) for r in records)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.records.extend(records)
        self.appends += 1

    def replace(self, records: Sequence[Record]) -> None:
        """Make ``records`` the whole log, atomically and durably."""
        data = b"".join(frame_record(r.encode()) for r in records)
        replace_durably(self.path, data, mode=0o600)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        self.records = list(records)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

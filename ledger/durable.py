"""Durable small-file writes shared by everything that keeps state on disk (the ledger's
manifest, a replica's protocol log snapshot, evidence files): a file is replaced whole or not at
all, and a rename is made durable by syncing its directory."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (a new or renamed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that after a crash the file holds either its old content
    or all of ``data``: a temporary file is written and fsynced, renamed over ``path``, and the
    directory fsynced."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)

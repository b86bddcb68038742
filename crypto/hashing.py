"""SHA-256, the one hash function of the project."""

from __future__ import annotations

import hashlib

DIGEST_SIZE = 32
"""Bytes in every digest: block hashes, transaction ids, Merkle nodes, statements."""


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """The SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def short_hex(digest: bytes, chars: int = 12) -> str:
    """An abbreviated hex form for logs and tables (never for comparisons)."""
    return digest.hex()[:chars]

"""Errors raised by the crypto package. Each carries the data a caller needs to report it."""

from __future__ import annotations


class CryptoError(Exception):
    """Base of the crypto package's errors."""


class InvalidKey(CryptoError, ValueError):
    """Key material is malformed: wrong length, not a valid curve point, a small-order point."""


class InvalidCertificate(CryptoError):
    """A quorum certificate failed verification; ``reason`` says which rule it broke."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class KeyFileError(CryptoError):
    """A key or committee file could not be used. The message names the file and the problem."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

"""INSECURE fast "signatures" for bulk simulation only.

Running thousands of simulated scenarios a minute needs signatures that cost a hash, not a curve
multiplication. This scheme is a keyed hash whose key is *public*: anybody can forge any
signature. It exists so that simulations exercise every code path that handles signatures (the
bytes, the sizes, the signer bitmaps, the domains) at a thousandth of the cost. A share of every
simulation suite runs with real Ed25519, and the replica runtime refuses this scheme.

A signature over ``digest`` by replica ``i`` is ``SHA-512(b"INSECURE" || public_key_i || digest)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .committee import Committee
from .keys import PublicKey, SigningKey


class InsecureFastSigner:
    """Signs with the insecure scheme; ``public_key`` is a real Ed25519 key (for identity only)."""

    __slots__ = ("_prefix", "public_key")

    insecure = True

    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key
        self._prefix = b"INSECURE" + public_key.raw

    @classmethod
    def from_seed(cls, seed: bytes) -> InsecureFastSigner:
        return cls(SigningKey(seed).public_key)

    def sign_digest(self, digest: bytes) -> bytes:
        return hashlib.sha512(self._prefix + digest).digest()

    def __repr__(self) -> str:
        return f"InsecureFastSigner({self.public_key.key_id})"


class InsecureFastCommittee(Committee):
    """A committee that checks the insecure scheme instead of Ed25519."""

    __slots__ = ("_prefixes",)

    insecure = True

    def __init__(self, chain_id: str, members: Iterable[PublicKey], protocol: str = "pbft") -> None:
        super().__init__(chain_id, members, protocol)
        self._prefixes = tuple(b"INSECURE" + key.raw for key in self.members)

    def verify_signature(self, replica: int, digest: bytes, signature: bytes) -> bool:
        if not 0 <= replica < len(self._prefixes):
            return False
        return hashlib.sha512(self._prefixes[replica] + digest).digest() == signature

"""Ed25519 keys, domain-separated signing and verification, through PyNaCl (libsodium) only.

All replicas must agree on which signatures are valid, so there is one implementation:
libsodium's, which refuses small-order and non-canonical public keys and non-canonical
signatures that other libraries accept.

What is signed
--------------
``sign(domain, payload)`` signs the 32-byte *statement digest*
``SHA-256(domain.tag || payload)``, where ``domain.tag`` is the canonical CBOR encoding of
``["bft-sig", 1, chain_id, kind]``. The tag is self-delimiting, so no (domain, payload) pair can
be read as another, and a signature made for one chain or one kind of message never verifies for
another. Because the signature covers the digest, a quorum certificate can carry the digest alone
and still be checked by anyone (see :mod:`crypto.qc`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from .codec import encode_value
from .errors import InvalidKey
from .hashing import sha256

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

_KIND = re.compile(r"[a-z0-9][a-z0-9._/-]{0,63}")
_CHAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def check_chain_id(chain_id: str) -> str:
    """Validate a chain id: 1-64 characters of letters, digits, '.', '_' and '-'."""
    if not isinstance(chain_id, str) or not _CHAIN.fullmatch(chain_id):
        raise ValueError(
            f"invalid chain id {chain_id!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return chain_id


@dataclass(frozen=True, slots=True)
class Domain:
    """What a signature is for: the chain and the kind of statement (``"pbft/prepare"``)."""

    chain_id: str
    kind: str
    tag: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        if not isinstance(self.kind, str) or not _KIND.fullmatch(self.kind):
            raise ValueError(f"invalid signature domain kind {self.kind!r}")
        object.__setattr__(self, "tag", encode_value(["bft-sig", 1, self.chain_id, self.kind]))

    def digest(self, payload: bytes) -> bytes:
        """The statement digest that a signature in this domain covers."""
        return sha256(self.tag + payload)


def statement_digest(domain: Domain, payload: bytes) -> bytes:
    """``SHA-256(domain.tag || payload)``: what ``sign(domain, payload)`` signs."""
    return domain.digest(payload)


class PublicKey:
    """An Ed25519 public key that has been checked to be a valid, non-small-order point."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if type(raw) is not bytes or len(raw) != PUBLIC_KEY_SIZE:
            raise InvalidKey(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")
        if not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
            raise InvalidKey("not a valid Ed25519 public key (off the curve or of small order)")
        self.raw = raw
        self._key = nacl.signing.VerifyKey(raw)

    @classmethod
    def from_hex(cls, text: str) -> PublicKey:
        if not isinstance(text, str) or not _HEX_KEY.fullmatch(text):
            raise InvalidKey("a public key is 64 hex digits")
        return cls(bytes.fromhex(text))

    @property
    def key_id(self) -> str:
        """A short, stable identifier: the first 8 bytes of SHA-256(key), in hex."""
        return sha256(self.raw)[:8].hex()

    def verify_digest(self, digest: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's valid signature over ``digest``."""
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(digest, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    def verify(self, domain: Domain, payload: bytes, signature: bytes) -> bool:
        """True when ``signature`` signs ``payload`` in ``domain`` with this key."""
        return self.verify_digest(domain.digest(payload), signature)

    def hex(self) -> str:
        return self.raw.hex()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.key_id})"


@functools.lru_cache(maxsize=65_536)
def _known_key(raw: bytes) -> PublicKey:
    return PublicKey(raw)


def public_key(raw: bytes) -> PublicKey:
    """``PublicKey(raw)``, remembering the last 65,536 keys that passed the point check.

    The check (on the curve, in the prime-order subgroup) costs about as much as verifying a
    signature; a replica sees the same few client keys on every transaction. A key that fails is
    not remembered, so it fails again with the same :class:`InvalidKey`.
    """
    if type(raw) is not bytes:
        return PublicKey(raw)
    return _known_key(raw)


class SigningKey:
    """An Ed25519 signing key made from a 32-byte seed. Its repr never shows the seed."""

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        if type(seed) is not bytes or len(seed) != SEED_SIZE:
            raise InvalidKey(f"an Ed25519 seed is {SEED_SIZE} bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.public_key = PublicKey(bytes(self._key.verify_key))

    @classmethod
    def generate(cls) -> SigningKey:
        """A new key from the operating system's secure random source."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a statement digest; prefer :meth:`sign`, which builds the digest."""
        return self._key.sign(digest).signature

    def sign(self, domain: Domain, payload: bytes) -> bytes:
        """Sign ``payload`` in ``domain``: the signature is valid for that domain only."""
        return self.sign_digest(domain.digest(payload))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_key.key_id})"

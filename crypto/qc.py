"""Quorum certificates: one statement, a set of distinct signers, one Ed25519 signature each.

Compact form
------------
``statement`` is the 32-byte statement digest every signature covers (see :mod:`crypto.keys`).
``signers`` is a bitmap over replica ids: bit ``i`` is bit ``i % 8`` (least significant first)
of byte ``i // 8``, and the bitmap is exactly ``ceil(n / 8)`` bytes for a committee of ``n``.
``signatures`` lists one signature per set bit, in increasing replica id. A bitmap cannot name a
signer twice, so a certificate can never count one replica's vote two times.

Verification order
------------------
:meth:`QuorumCertificate.verify` checks from cheapest to dearest and stops at the first failure:
the statement, the bitmap's length and unused bits (unknown signers), the number of signers
against the threshold, then every signature. A certificate with any invalid signature is invalid,
even when the valid ones alone would reach the threshold: honest replicas never produce one.

A certificate with many signatures is verified in one call, so a Trio runtime can hand the whole
of it to a worker thread in a single hop (PyNaCl releases the GIL while it verifies).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from .codec import Bytes, CodecError, Record, Seq, record, wire
from .committee import MAX_COMMITTEE, Committee
from .errors import InvalidCertificate
from .hashing import DIGEST_SIZE
from .keys import SIGNATURE_SIZE

QC_TAG = 0x01


def bitmap_size(n: int) -> int:
    return (n + 7) // 8


def make_bitmap(indices: Iterable[int], n: int) -> bytes:
    """The signer bitmap of ``indices`` for a committee of ``n``; rejects repeats and strays."""
    out = bytearray(bitmap_size(n))
    for i in indices:
        if not 0 <= i < n:
            raise ValueError(f"replica id {i} is outside a committee of {n}")
        byte, bit = divmod(i, 8)
        if out[byte] >> bit & 1:
            raise ValueError(f"replica id {i} appears twice")
        out[byte] |= 1 << bit
    return bytes(out)


def bitmap_indices(bitmap: bytes) -> Iterator[int]:
    """The replica ids whose bits are set, in increasing order."""
    for byte_index, byte in enumerate(bitmap):
        while byte:
            low = byte & -byte
            yield byte_index * 8 + low.bit_length() - 1
            byte ^= low


def _popcount(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little").bit_count()


@record(tag=QC_TAG)
class QuorumCertificate(Record):
    """A statement digest with the signer bitmap and the signers' signatures."""

    statement: bytes = wire(Bytes(DIGEST_SIZE))
    signers: bytes = wire(Bytes(min_size=1, max_size=bitmap_size(MAX_COMMITTEE)))
    signatures: tuple[bytes, ...] = wire(Seq(Bytes(SIGNATURE_SIZE), max_len=MAX_COMMITTEE))

    def _check(self) -> None:
        count = _popcount(self.signers)
        # An empty signature list is an unsigned acknowledgement set (crash-fault mode);
        # otherwise there is exactly one signature per signer.
        if self.signatures and len(self.signatures) != count:
            raise CodecError(
                f"{count} signers but {len(self.signatures)} signatures", "QuorumCertificate"
            )

    @classmethod
    def from_votes(
        cls, statement: bytes, votes: Iterable[tuple[int, bytes]], n: int
    ) -> QuorumCertificate:
        """Assemble a certificate from ``(replica id, signature)`` pairs.

        Raises ``ValueError`` when a replica appears twice or lies outside the committee: the
        caller's vote tally should never let that happen.
        """
        ordered = sorted(votes, key=lambda v: v[0])
        bitmap = make_bitmap((i for i, _ in ordered), n)
        return cls(statement=statement, signers=bitmap, signatures=tuple(s for _, s in ordered))

    @classmethod
    def unsigned(cls, statement: bytes, indices: Iterable[int], n: int) -> QuorumCertificate:
        """A set of acknowledgements without signatures (for crash-fault-tolerant mode)."""
        return cls(statement=statement, signers=make_bitmap(indices, n), signatures=())

    @property
    def signer_ids(self) -> tuple[int, ...]:
        return tuple(bitmap_indices(self.signers))

    @property
    def signer_count(self) -> int:
        return _popcount(self.signers)

    @property
    def is_signed(self) -> bool:
        return bool(self.signatures)

    def _check_signers(self, committee: Committee, threshold: int, statement: bytes) -> None:
        if self.statement != statement:
            raise InvalidCertificate("certificate is over another statement")
        n = committee.n
        if len(self.signers) != bitmap_size(n):
            raise InvalidCertificate(
                f"signer bitmap of {len(self.signers)} bytes does not fit a committee of {n}"
            )
        spare = len(self.signers) * 8 - n
        if spare and self.signers[-1] >> (8 - spare):
            raise InvalidCertificate("signer bitmap names an unknown replica")
        count = self.signer_count
        if count < threshold:
            raise InvalidCertificate(f"{count} signers, {threshold} required")

    def verify(
        self,
        committee: Committee,
        *,
        threshold: int,
        statement: bytes,
        known: Mapping[int, bytes] | None = None,
    ) -> None:
        """Check that at least ``threshold`` distinct committee members signed ``statement``.

        ``known``: signatures of ``statement`` the caller holds as valid, by replica (its own,
        say). A signature byte for byte equal to the known one of its replica is not checked
        again; any other is (Ed25519 signing is deterministic: a replica's signature of a
        statement has one value, and anything else in its place must pass verification).
        Raises :class:`InvalidCertificate` with the reason; returns ``None`` when valid.
        """
        self._check_signers(committee, threshold, statement)
        if len(self.signatures) != self.signer_count:
            raise InvalidCertificate("certificate carries no signatures")
        for replica, signature in zip(bitmap_indices(self.signers), self.signatures, strict=True):
            if known is not None and known.get(replica) == signature:
                continue
            if not committee.verify_signature(replica, statement, signature):
                raise InvalidCertificate(f"invalid signature from replica {replica}")

    def verify_acknowledgements(
        self, committee: Committee, *, threshold: int, statement: bytes
    ) -> None:
        """Check an unsigned acknowledgement set: statement, known replicas, enough of them.

        This proves nothing against a Byzantine writer; it records who stored what.
        """
        self._check_signers(committee, threshold, statement)
        if self.signatures:
            self.verify(committee, threshold=threshold, statement=statement)

    def is_valid(self, committee: Committee, *, threshold: int, statement: bytes) -> bool:
        try:
            self.verify(committee, threshold=threshold, statement=statement)
        except InvalidCertificate:
            return False
        return True

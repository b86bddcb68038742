"""Crypto benchmark: Ed25519 sign and verify (PyNaCl through the project's keys, against the
``cryptography`` library in the same run), quorum certificate verification, SHA-256 and Merkle
roots.

Run from a checkout: ``python -m bench.crypto_bench [--quick] [--json PATH]``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import Committee, Domain, QuorumCertificate, SigningKey, encode_value, sha256
from crypto.merkle import leaf_hashes, merkle_root

from ._report import Report, Timing, duration, parser, per_call, ratio, settle_allocator, si

CHAIN_ID = "bench"
QC_SIZES = (4, 10, 31)
MERKLE_LEAVES = 500
MERKLE_LEAF_SIZE = 256
SHA_SIZES = (64, 256, 4096, 1 << 20)


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int
    min_round: float

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(rounds=3, min_round=0.005) if quick else cls(rounds=5, min_round=0.05)

    def time(self, fn) -> Timing:  # type: ignore[no-untyped-def]
        return per_call(fn, rounds=self.rounds, min_round=self.min_round)


def _commit_payload(rng: random.Random) -> bytes:
    """A realistic signed payload: a block commit statement's body."""
    return encode_value(["pbft", 7, 123_456, rng.randbytes(32)])


def bench_ed25519(report: Report, cfg: Settings, rng: random.Random) -> None:
    seed = rng.randbytes(32)
    domain = Domain(CHAIN_ID, "block/commit")
    payload = _commit_payload(rng)
    digest = domain.digest(payload)

    ours = SigningKey(seed)
    ours_pub = ours.public_key
    raw_nacl = nacl.signing.SigningKey(seed)
    raw_nacl_pub = raw_nacl.verify_key
    theirs = Ed25519PrivateKey.from_private_bytes(seed)
    theirs_pub = theirs.public_key()

    signature = ours.sign(domain, payload)
    # Ed25519 is deterministic: both libraries must produce the very same signature.
    if theirs.sign(digest) != signature or not ours_pub.verify(domain, payload, signature):
        raise AssertionError("PyNaCl and cryptography disagree on an Ed25519 signature")

    def theirs_verify_domain() -> bool:
        try:
            theirs_pub.verify(signature, domain.digest(payload))
        except InvalidSignature:
            return False
        return True

    def theirs_verify_raw() -> bool:
        try:
            theirs_pub.verify(signature, digest)
        except InvalidSignature:
            return False
        return True

    cases = [
        (
            "sign (domain digest + Ed25519)",
            "sign",
            lambda: ours.sign(domain, payload),
            lambda: theirs.sign(domain.digest(payload)),
        ),
        (
            "verify (domain digest + Ed25519)",
            "verify",
            lambda: ours_pub.verify(domain, payload, signature),
            theirs_verify_domain,
        ),
        (
            "sign, bare library call",
            "sign_raw",
            lambda: raw_nacl.sign(digest),
            lambda: theirs.sign(digest),
        ),
        (
            "verify, bare library call",
            "verify_raw",
            lambda: raw_nacl_pub.verify(digest, signature),
            theirs_verify_raw,
        ),
    ]
    rows = []
    for label, key, nacl_fn, crypto_fn in cases:
        a = cfg.time(nacl_fn)
        b = cfg.time(crypto_fn)
        r = a.per_second / b.per_second
        rows.append(
            [
                label,
                si(a.per_second, "/s"),
                duration(a.seconds),
                si(b.per_second, "/s"),
                duration(b.seconds),
                ratio(r),
            ]
        )
        report.figure(f"ed25519.{key}.pynacl_per_s", a.per_second, "ops/s")
        report.figure(f"ed25519.{key}.cryptography_per_s", b.per_second, "ops/s")
        report.figure(f"ed25519.{key}.pynacl_over_cryptography", r, "ratio of ops/s")
    report.table(
        "Ed25519, one core",
        ["operation", "PyNaCl", "per op", "cryptography", "per op", "PyNaCl/cryptography"],
        rows,
        caption=(
            "PyNaCl rows 1-2 go through crypto.SigningKey / crypto.PublicKey; the cryptography "
            "rows sign the same domain digest.\nRatio = PyNaCl ops/s / cryptography ops/s "
            "(above 1: PyNaCl is faster)."
        ),
    )


def bench_qc(report: Report, cfg: Settings, rng: random.Random) -> None:
    rows = []
    for n in QC_SIZES:
        keys = [SigningKey(rng.randbytes(32)) for _ in range(n)]
        committee = Committee(CHAIN_ID, [k.public_key for k in keys])
        quorum = committee.quorum
        statement = Domain(CHAIN_ID, "block/commit").digest(_commit_payload(rng))
        signers = sorted(rng.sample(range(n), quorum))
        qc = QuorumCertificate.from_votes(
            statement, [(i, keys[i].sign_digest(statement)) for i in signers], n
        )
        qc.verify(committee, threshold=quorum, statement=statement)  # valid, or this raises
        members = committee.members
        pairs = list(zip(signers, qc.signatures, strict=True))

        def loop(pairs=pairs, members=members, statement=statement) -> bool:
            return all(members[i].verify_digest(statement, s) for i, s in pairs)

        t = cfg.time(
            lambda qc=qc, committee=committee, quorum=quorum, statement=statement: qc.verify(
                committee, threshold=quorum, statement=statement
            )
        )
        base = cfg.time(loop)
        r = t.seconds / base.seconds
        rows.append(
            [
                f"n={n}",
                quorum,
                duration(t.seconds),
                duration(t.seconds / quorum),
                si(t.per_second, "/s"),
                duration(base.seconds),
                ratio(r),
            ]
        )
        report.figure(f"qc.n{n}.signatures", quorum)
        report.figure(f"qc.n{n}.verify_us", t.us, "us")
        report.figure(f"qc.n{n}.verify_per_signature_us", t.us / quorum, "us")
        report.figure(f"qc.n{n}.bare_loop_us", base.us, "us")
        report.figure(f"qc.n{n}.qc_over_loop", r, "ratio of times")
    report.table(
        "Quorum certificate verify (QuorumCertificate.verify, 2f+1 signatures)",
        ["committee", "sigs", "per QC", "per sig", "QCs/s", "bare verify loop", "QC/loop"],
        rows,
        caption="Baseline: the same signatures checked with PublicKey.verify_digest in a loop.",
    )


def bench_sha256(report: Report, cfg: Settings, rng: random.Random) -> None:
    rows = []
    for size in SHA_SIZES:
        data = rng.randbytes(size)
        t = cfg.time(lambda data=data: sha256(data))
        base = cfg.time(lambda data=data: hashlib.sha256(data).digest())
        mbps = size / t.seconds / 1e6
        label = f"{size // 1024} KiB" if size >= 1024 else f"{size} B"
        rows.append(
            [
                label,
                duration(t.seconds),
                f"{mbps:,.0f} MB/s",
                si(t.per_second, "/s"),
                f"{size / base.seconds / 1e6:,.0f} MB/s",
                ratio(t.seconds / base.seconds),
            ]
        )
        report.figure(f"sha256.{size}B.mb_per_s", mbps, "MB/s")
        report.figure(f"sha256.{size}B.us", t.us, "us")
    report.table(
        "SHA-256 (crypto.sha256)",
        ["input", "per hash", "throughput", "hashes/s", "hashlib direct", "crypto/hashlib"],
        rows,
        caption="Small inputs are bound by the per-call cost, not by the hash.",
    )


def bench_merkle(report: Report, cfg: Settings, rng: random.Random) -> None:
    leaves = [rng.randbytes(MERKLE_LEAF_SIZE) for _ in range(MERKLE_LEAVES)]
    blob = b"".join(leaves)
    root = cfg.time(lambda: merkle_root(leaves))
    only_leaves = cfg.time(lambda: leaf_hashes(leaves))
    flat = cfg.time(lambda: hashlib.sha256(blob).digest())
    rows = [
        [
            "merkle_root",
            duration(root.seconds),
            si(MERKLE_LEAVES / root.seconds, " leaves/s"),
            ratio(root.seconds / flat.seconds),
        ],
        [
            "leaf hashes only",
            duration(only_leaves.seconds),
            si(MERKLE_LEAVES / only_leaves.seconds, " leaves/s"),
            ratio(only_leaves.seconds / flat.seconds),
        ],
        [
            f"one SHA-256 over all {len(blob) // 1024} KiB",
            duration(flat.seconds),
            si(MERKLE_LEAVES / flat.seconds, " leaves/s"),
            ratio(1.0),
        ],
    ]
    report.figure("merkle.500x256.root_us", root.us, "us")
    report.figure("merkle.500x256.leaves_per_s", MERKLE_LEAVES / root.seconds, "leaves/s")
    report.figure("merkle.500x256.leaf_hashes_us", only_leaves.us, "us")
    report.figure("merkle.500x256.flat_sha256_us", flat.us, "us")
    report.table(
        f"Merkle root of {MERKLE_LEAVES} leaves of {MERKLE_LEAF_SIZE} B",
        ["what", "time", "rate", "vs one flat hash"],
        rows,
        caption=f"A tree of n leaves costs 2n-1 SHA-256 calls ({2 * MERKLE_LEAVES - 1} here).",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser(__doc__).parse_args(argv)
    settle_allocator()
    report = Report("crypto", quick=args.quick)
    cfg = Settings.of(args.quick)
    rng = random.Random(2024)
    report.header("Crypto benchmark")
    bench_ed25519(report, cfg, rng)
    bench_qc(report, cfg, rng)
    bench_sha256(report, cfg, rng)
    bench_merkle(report, cfg, rng)
    if args.json:
        report.write_json(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

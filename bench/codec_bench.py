"""Codec benchmark: strict canonical encode and decode of every record type, per message and per
500-transaction block, against plain ``cbor2.dumps`` / ``cbor2.loads`` of the same plain value.

Run from a checkout: ``python -m bench.codec_bench [--quick] [--json PATH]``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cbor2

from crypto import Committee, MerkleTree, QuorumCertificate, SigningKey
from crypto.codec import Record, decode_value
from ledger import Block, BlockHeader, Receipt, Transaction, genesis_hash, make_header

from ._report import Report, Timing, duration, parser, per_call, ratio, settle_allocator, si

CHAIN_ID = "bench"
PAYLOAD_SIZE = 256
BATCH = 500


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int
    min_round: float

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(rounds=3, min_round=0.005) if quick else cls(rounds=5, min_round=0.05)

    def time(self, fn: Callable[[], object]) -> Timing:
        return per_call(fn, rounds=self.rounds, min_round=self.min_round)


@dataclass(frozen=True, slots=True)
class Samples:
    tx: Transaction
    signed_tx: Transaction
    header: BlockHeader
    qc4: QuorumCertificate
    qc31: QuorumCertificate
    receipt: Receipt
    block: Block
    txs: tuple[Transaction, ...]


def _certificate(rng: random.Random, n: int, statement: bytes) -> QuorumCertificate:
    keys = [SigningKey(rng.randbytes(32)) for _ in range(n)]
    quorum = Committee(CHAIN_ID, [k.public_key for k in keys]).quorum
    signers = sorted(rng.sample(range(n), quorum))
    return QuorumCertificate.from_votes(
        statement, [(i, keys[i].sign_digest(statement)) for i in signers], n
    )


def make_samples(rng: random.Random, batch: int) -> Samples:
    client = rng.randbytes(16)
    txs = tuple(
        Transaction(client=client, seq=i + 1, payload=rng.randbytes(PAYLOAD_SIZE), signature=b"")
        for i in range(batch)
    )
    signer = SigningKey(rng.randbytes(32))
    signed_tx = Transaction.signed(signer, CHAIN_ID, 1, rng.randbytes(PAYLOAD_SIZE))
    encoded = tuple(t.encode() for t in txs)
    header = make_header(
        chain_id=CHAIN_ID,
        height=1_000,
        prev_hash=genesis_hash(CHAIN_ID),
        txs=encoded,
        protocol="pbft",
        view=3,
        proposer=1,
    )
    statement = header.commit_statement()
    qc4 = _certificate(rng, 4, statement)
    qc31 = _certificate(rng, 31, statement)
    block = Block(header=header, txs=encoded, certificate=qc4)
    index = batch // 2
    receipt = Receipt(
        header=header,
        certificate=qc4,
        tx=encoded[index],
        index=index,
        path=MerkleTree(encoded).proof(index),
    )
    return Samples(txs[0], signed_tx, header, qc4, qc31, receipt, block, txs)


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    key: str
    size: int
    encode: Timing
    dumps: Timing
    decode: Timing
    loads: Timing


def measure(cfg: Settings, label: str, key: str, rec: Record) -> Row:
    cls = type(rec)
    data = rec.encode()
    plain = rec.to_wire()
    if cls.decode(data) != rec or cbor2.dumps(plain) != data:
        raise AssertionError(f"{label}: round trip or baseline encoding differs")
    return Row(
        label,
        key,
        len(data),
        encode=cfg.time(rec.encode),
        dumps=cfg.time(lambda: cbor2.dumps(plain)),
        decode=cfg.time(lambda: cls.decode(data)),
        loads=cfg.time(lambda: cbor2.loads(data)),
    )


def measure_one_by_one(cfg: Settings, txs: tuple[Transaction, ...]) -> Row:
    """The same transactions encoded and decoded as separate messages, per batch."""
    datas = [t.encode() for t in txs]
    plains = [t.to_wire() for t in txs]
    decode = Transaction.decode
    return Row(
        f"{len(txs)} txs, 1 msg each",
        "tx_one_by_one",
        sum(map(len, datas)),
        encode=cfg.time(lambda: [t.encode() for t in txs]),
        dumps=cfg.time(lambda: [cbor2.dumps(p) for p in plains]),
        decode=cfg.time(lambda: [decode(d) for d in datas]),
        loads=cfg.time(lambda: [cbor2.loads(d) for d in datas]),
    )


def breakdown(cfg: Settings, rec: Record, row: Row) -> dict[str, Timing]:
    """Time the steps of ``type(rec).decode``: strict CBOR, schema, the constructor alone."""
    cls = type(rec)
    data = rec.encode()
    plain = cbor2.loads(data)
    fields = {name: getattr(rec, name) for name, _ in cls.SCHEMA}
    return {
        "loads": row.loads,
        "decode_value": cfg.time(lambda: decode_value(data)),
        "from_wire": cfg.time(lambda: cls.from_wire(plain)),
        "constructor": cfg.time(lambda: cls(**fields)),
        "decode": row.decode,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parser(__doc__).parse_args(argv)
    settle_allocator()
    report = Report("codec", quick=args.quick)
    cfg = Settings.of(args.quick)
    batch = 50 if args.quick else BATCH
    s = make_samples(random.Random(2024), batch)
    report.header("Codec benchmark")

    rows = [
        measure(cfg, "Transaction", "transaction", s.tx),
        measure(cfg, "Transaction, signed", "transaction_signed", s.signed_tx),
        measure(cfg, "BlockHeader", "block_header", s.header),
        measure(cfg, "QC n=4, 3 sigs", "qc_n4", s.qc4),
        measure(cfg, "QC n=31, 21 sigs", "qc_n31", s.qc31),
        measure(cfg, f"Receipt, path {len(s.receipt.path)}", "receipt", s.receipt),
        measure(cfg, f"Block, {batch} txs", "block", s.block),
        measure_one_by_one(cfg, s.txs),
    ]
    table_rows = []
    for r in rows:
        enc_ratio = r.encode.seconds / r.dumps.seconds
        dec_ratio = r.decode.seconds / r.loads.seconds
        table_rows.append(
            [
                r.label,
                f"{r.size:,}",
                duration(r.encode.seconds),
                duration(r.dumps.seconds),
                ratio(enc_ratio),
                duration(r.decode.seconds),
                duration(r.loads.seconds),
                ratio(dec_ratio),
            ]
        )
        report.figure(f"{r.key}.bytes", r.size, "bytes")
        report.figure(f"{r.key}.encode_us", r.encode.us, "us")
        report.figure(f"{r.key}.cbor2_dumps_us", r.dumps.us, "us")
        report.figure(f"{r.key}.encode_strict_over_plain", enc_ratio, "ratio of times")
        report.figure(f"{r.key}.decode_us", r.decode.us, "us")
        report.figure(f"{r.key}.cbor2_loads_us", r.loads.us, "us")
        report.figure(f"{r.key}.decode_strict_over_plain", dec_ratio, "ratio of times")
    report.table(
        "Strict codec vs plain cbor2, per message",
        [
            "record",
            "bytes",
            "encode",
            "cbor2.dumps",
            "strict/plain",
            "decode",
            "cbor2.loads",
            "strict/plain",
        ],
        table_rows,
        caption=(
            "encode = Record.encode(), decode = Cls.decode(bytes).\n"
            "Baseline: cbor2.dumps / cbor2.loads of the same plain value (rec.to_wire()).\n"
            f"Transactions carry {PAYLOAD_SIZE}-B payloads; blocks carry an n=4 certificate."
        ),
    )

    # Per transaction, inside a block versus as separate messages.
    block_row, single_row = rows[-2], rows[-1]
    per_tx = [
        [
            "in a Block (batch)",
            duration(block_row.encode.seconds / batch),
            duration(block_row.decode.seconds / batch),
            si(batch / block_row.decode.seconds, " tx/s"),
        ],
        [
            "one message each",
            duration(single_row.encode.seconds / batch),
            duration(single_row.decode.seconds / batch),
            si(batch / single_row.decode.seconds, " tx/s"),
        ],
    ]
    report.figure("block.decode_per_tx_us", block_row.decode.us / batch, "us")
    report.figure("block.encode_per_tx_us", block_row.encode.us / batch, "us")
    report.figure("block.decode_tx_per_s", batch / block_row.decode.seconds, "tx/s")
    report.table(
        f"Per transaction ({PAYLOAD_SIZE}-B payloads, {batch} per batch)",
        ["carried", "encode/tx", "decode/tx", "decode rate"],
        per_tx,
    )

    # Where a decode goes: the strict CBOR step, the schema step, and inside the schema step
    # the constructor that the decoded fields are passed through.
    steps = {
        "cbor2.loads (baseline)": "loads",
        "decode_value: strict CBOR (loads + canonical re-encode)": "decode_value",
        "Cls.from_wire: schema checks + constructor": "from_wire",
        "  of which Cls(...) constructor re-checks fields": "constructor",
        "Cls.decode (the sum)": "decode",
    }
    parts: dict[str, dict[str, Timing]] = {}
    for key, rec, row in (("transaction", s.tx, rows[0]), ("block", s.block, block_row)):
        parts[key] = breakdown(cfg, rec, row)
        for name, t in parts[key].items():
            report.figure(f"{key}.decode_steps.{name}_us", t.us, "us")
    table_rows = []
    for label, name in steps.items():
        cells: list[object] = [label]
        for key in parts:
            t = parts[key][name]
            cells += [duration(t.seconds), ratio(t.seconds / parts[key]["loads"].seconds)]
        table_rows.append(cells)
    report.table(
        "Where a strict decode goes",
        ["step", "Transaction", "vs loads", f"Block, {batch} txs", "vs loads"],
        table_rows,
    )
    if args.json:
        report.write_json(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

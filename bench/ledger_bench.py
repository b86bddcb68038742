"""Ledger benchmark: append throughput with group commit (fsync'd) against raw file appends,
sustained append as the ledger grows, read throughput, and open / recovery time.

Run from a checkout: ``python -m bench.ledger_bench [--quick] [--json PATH] [--dir DIR]``.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cbor2

from crypto import Committee, QuorumCertificate, SigningKey
from ledger import Block, Transaction, genesis_hash, make_header
from ledger.store import RECORD_HEADER, SEGMENT_HEADER, LedgerStore, frame_record

from ._report import Report, Timing, duration, median, parser, per_run, ratio, settle_allocator, si

CHAIN_ID = "bench"
TARGET_TX_PER_S = 50_000
COMMITTEE_SIZE = 4
GROUPS = (1, 4, 16)
SUSTAINED_GROUPS = (1, 16)


@dataclass(frozen=True, slots=True)
class Settings:
    blocks: int
    txs_per_block: int
    payload_size: int
    rounds: int
    sustained_blocks: int
    sustained_window: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(8, 50, 256, 2, sustained_blocks=8, sustained_window=4)
        return cls(128, 500, 256, 5, sustained_blocks=1024, sustained_window=128)


@dataclass
class ChainBuilder:
    """Makes consecutive certified blocks of fresh transactions (each block signed by a
    Byzantine quorum of a real committee)."""

    rng: random.Random
    txs_per_block: int
    payload_size: int
    keys: list[SigningKey] = field(init=False)
    committee: Committee = field(init=False)
    clients: list[bytes] = field(init=False)
    height: int = 0
    seq: int = 0
    prev: bytes = b""

    def __post_init__(self) -> None:
        self.keys = [SigningKey(self.rng.randbytes(32)) for _ in range(COMMITTEE_SIZE)]
        self.committee = Committee(CHAIN_ID, [k.public_key for k in self.keys])
        self.clients = [self.rng.randbytes(16) for _ in range(8)]
        self.prev = genesis_hash(CHAIN_ID)

    def next_blocks(self, count: int) -> list[Block]:
        out = []
        rng = self.rng
        for _ in range(count):
            self.height += 1
            txs = []
            for _ in range(self.txs_per_block):
                self.seq += 1
                tx = Transaction(
                    client=rng.choice(self.clients),
                    seq=self.seq,
                    payload=rng.randbytes(self.payload_size),
                    signature=b"",
                )
                txs.append(tx.encode())
            header = make_header(
                chain_id=CHAIN_ID,
                height=self.height,
                prev_hash=self.prev,
                txs=txs,
                protocol="pbft",
                view=0,
                proposer=self.height % COMMITTEE_SIZE,
            )
            statement = header.commit_statement()
            signers = sorted(rng.sample(range(COMMITTEE_SIZE), self.committee.quorum))
            certificate = QuorumCertificate.from_votes(
                statement,
                [(i, self.keys[i].sign_digest(statement)) for i in signers],
                COMMITTEE_SIZE,
            )
            out.append(Block(header=header, txs=tuple(txs), certificate=certificate))
            self.prev = header.hash()
        return out


# --------------------------------------------------------------------------------------------
# Append


@dataclass(frozen=True, slots=True)
class AppendRun:
    total: float
    appending: float
    syncing: float


def append_blocks(store: LedgerStore, blocks: Sequence[Block], group: int) -> AppendRun:
    """Append ``blocks`` with one sync every ``group`` blocks; time only append and sync."""
    appending = syncing = 0.0
    clock = time.perf_counter
    for i in range(0, len(blocks), group):
        t0 = clock()
        for block in blocks[i : i + group]:
            store.append(block)
        t1 = clock()
        store.sync()
        t2 = clock()
        appending += t1 - t0
        syncing += t2 - t1
    return AppendRun(appending + syncing, appending, syncing)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def raw_append(path: Path, frames: Sequence[bytes], group: int | None) -> float:
    """Append the framed records to a plain file; fsync every ``group`` records, or never."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        started = time.perf_counter()
        if group is None:
            for frame in frames:
                _write_all(fd, frame)
        else:
            for i in range(0, len(frames), group):
                _write_all(fd, b"".join(frames[i : i + group]))
                os.fsync(fd)
        return time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()


def bench_append(
    report: Report, cfg: Settings, work: Path, blocks: list[Block], txs: int
) -> dict[int, float]:
    frames = [frame_record(b.encode()) for b in blocks]
    nbytes = sum(map(len, frames))
    rows = []
    split_rows = []
    rates: dict[int, float] = {}
    raw_nosync = median(raw_append(work / "raw.dat", frames, None) for _ in range(cfg.rounds))
    raw_rate = txs / raw_nosync
    report.figure("append.raw_nofsync.tx_per_s", raw_rate, "tx/s")
    for group in GROUPS:
        runs = []
        for r in range(cfg.rounds):
            directory = work / f"append-g{group}-{r}"
            store = LedgerStore.open(directory, chain_id=CHAIN_ID)
            gc.collect()
            try:
                runs.append(append_blocks(store, blocks, group))
                if store.height != len(blocks):
                    raise AssertionError("the store did not take every block")
            finally:
                store.close()
                shutil.rmtree(directory)
        runs.sort(key=lambda run: run.total)
        mid = runs[len(runs) // 2]
        rate = txs / mid.total
        rates[group] = rate
        raw_fsync = median(raw_append(work / "raw.dat", frames, group) for _ in range(cfg.rounds))
        met = rate >= TARGET_TX_PER_S
        rows.append(
            [
                f"LedgerStore, {group} block(s)/sync",
                si(rate, " tx/s"),
                f"{nbytes / mid.total / 1e6:,.0f} MB/s",
                ratio(rate / raw_rate),
                "met" if met else "NOT met",
            ]
        )
        rows.append(
            [
                f"raw write + fsync, {group} block(s)/sync",
                si(txs / raw_fsync, " tx/s"),
                f"{nbytes / raw_fsync / 1e6:,.0f} MB/s",
                ratio(raw_nosync / raw_fsync),
                "",
            ]
        )
        per_block = len(blocks)
        split_rows.append(
            [
                f"{group}",
                duration(mid.total / per_block),
                duration(mid.appending / per_block),
                duration(mid.syncing / per_block),
                duration(raw_fsync / per_block),
            ]
        )
        report.figure(f"append.g{group}.tx_per_s", rate, "tx/s")
        spread = (runs[-1].total - runs[0].total) / mid.total
        report.figure(f"append.g{group}.spread", spread, "(slowest-fastest)/median")
        report.figure(f"append.g{group}.fsynced_over_raw", rate / raw_rate, "ratio of tx/s")
        report.figure(f"append.g{group}.target_met", met)
        report.figure(f"append.g{group}.append_ms_per_block", mid.appending / per_block * 1e3, "ms")
        report.figure(f"append.g{group}.sync_ms_per_block", mid.syncing / per_block * 1e3, "ms")
        report.figure(f"append.g{group}.raw_fsync_tx_per_s", txs / raw_fsync, "tx/s")
    rows.append(
        [
            "raw write, no fsync (baseline)",
            si(raw_rate, " tx/s"),
            f"{nbytes / raw_nosync / 1e6:,.0f} MB/s",
            ratio(1.0),
            "",
        ]
    )
    report.table(
        f"Append, fresh ledger: {len(blocks)} certified blocks x {cfg.txs_per_block} txs "
        f"({cfg.payload_size}-B payloads), {nbytes / 1e6:.1f} MB",
        ["writer", "throughput", "bytes", "vs raw no-fsync", f">= {TARGET_TX_PER_S:,} tx/s"],
        rows,
        caption=(
            "Blocks are built before timing; only append() + sync() are timed "
            f"(median of {cfg.rounds} rounds).\nThe raw rows write the same framed records "
            "(frame_record(block.encode())) to a plain file."
        ),
    )
    report.table(
        "Where an append goes, per block",
        ["blocks/sync", "total", "append() checks", "sync(): write+fsync+index", "raw w+fsync"],
        split_rows,
    )
    verdict = ", ".join(
        f"{g} block(s)/sync {'met' if r >= TARGET_TX_PER_S else 'NOT met'} ({si(r, ' tx/s')})"
        for g, r in rates.items()
    )
    report.note(f"Target >= {TARGET_TX_PER_S:,} tx/s with fsync, fresh ledger: {verdict}.")
    return rates


def bench_sustained(report: Report, cfg: Settings, work: Path) -> None:
    """Append to ledgers that keep growing, window by window, one store per group size."""
    builder = ChainBuilder(random.Random(99), cfg.txs_per_block, cfg.payload_size)
    stores = {
        g: LedgerStore.open(work / f"sustained-g{g}", chain_id=CHAIN_ID) for g in SUSTAINED_GROUPS
    }
    rows = []
    last: dict[int, float] = {}
    try:
        done = 0
        while done < cfg.sustained_blocks:
            blocks = builder.next_blocks(cfg.sustained_window)  # untimed
            done += len(blocks)
            row: list[object] = [f"{done * cfg.txs_per_block:,}"]
            for g, store in stores.items():
                run = append_blocks(store, blocks, g)
                rate = len(blocks) * cfg.txs_per_block / run.total
                last[g] = rate
                row.append(si(rate, " tx/s"))
                row.append(duration(run.syncing / len(blocks)))
            rows.append(row)
        size_tx = done * cfg.txs_per_block
        for g, rate in last.items():
            report.figure(f"sustained.g{g}.last_window_tx_per_s", rate, "tx/s")
            report.figure(f"sustained.g{g}.target_met", rate >= TARGET_TX_PER_S)
        report.figure("sustained.ledger_tx", size_tx, "tx")
        columns = ["ledger size after window (tx)"]
        for g in SUSTAINED_GROUPS:
            columns += [f"{g} block(s)/sync", "sync/block"]
        report.table(
            f"Sustained append: windows of {cfg.sustained_window} blocks into a growing ledger",
            columns,
            rows,
            caption="Each window's blocks are built untimed, then appended to both ledgers.",
        )
        verdict = ", ".join(
            f"{g} block(s)/sync {'met' if r >= TARGET_TX_PER_S else 'NOT met'} ({si(r, ' tx/s')})"
            for g, r in last.items()
        )
        report.note(
            f"Target >= {TARGET_TX_PER_S:,} tx/s with fsync, last window (ledger of "
            f"{size_tx:,} tx): {verdict}."
        )
        # Rebuilding the index of the big ledger, once.
        big = stores[SUSTAINED_GROUPS[-1]]
        directory = big.directory
        big.close()
        _drop_index(directory)
        started = time.perf_counter()
        LedgerStore.open(directory, chain_id=CHAIN_ID).close()
        rebuild = time.perf_counter() - started
        report.figure("sustained.rebuild_index_s", rebuild, "s")
        report.note(
            f"Reopen after deleting index.sqlite, ledger of {size_tx:,} tx: {duration(rebuild)} "
            f"({si(done / rebuild, ' blocks/s')})."
        )
    finally:
        for store in stores.values():
            store.close()


# --------------------------------------------------------------------------------------------
# Read and recovery


def _drop_index(directory: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{directory}/index.sqlite{suffix}").unlink(missing_ok=True)


def raw_scan(directory: Path) -> int:
    """Read every segment and decode each record's payload with plain cbor2 (no checks)."""
    count = 0
    for path in sorted(directory.glob("*.seg")):
        data = path.read_bytes()
        pos = SEGMENT_HEADER.size
        while pos < len(data):
            _, length, _ = RECORD_HEADER.unpack_from(data, pos)
            start = pos + RECORD_HEADER.size
            value = cbor2.loads(data[start : start + length])
            count += len(value[3])
            pos = start + length
    return count


def bench_read_and_open(
    report: Report, cfg: Settings, work: Path, builder: ChainBuilder, blocks: list[Block]
) -> None:
    directory = work / "read"
    with LedgerStore.open(directory, chain_id=CHAIN_ID) as store:
        append_blocks(store, blocks, GROUPS[-1])
        nbytes = store.statistics().bytes_on_disk
    txs = len(blocks) * cfg.txs_per_block
    rounds = max(cfg.rounds, 3)

    def read_all(store: LedgerStore) -> None:
        got = sum(len(b.txs) for b in store.blocks())
        if got != txs:
            raise AssertionError(f"read {got} transactions, expected {txs}")

    def open_store() -> LedgerStore:
        return LedgerStore.open(directory, chain_id=CHAIN_ID)

    read = per_run(read_all, rounds=rounds, setup=open_store, teardown=LedgerStore.close)
    scan = per_run(lambda _: raw_scan(directory), rounds=rounds, setup=lambda: None)
    audit = per_run(
        lambda s: s.verify(builder.committee),
        rounds=rounds,
        setup=open_store,
        teardown=LedgerStore.close,
    )
    opened: list[LedgerStore] = []

    def timed_open(_: None) -> None:
        opened.append(open_store())

    def close_opened(_: None) -> None:
        while opened:
            opened.pop().close()

    reopen = per_run(timed_open, rounds=max(rounds, 5), setup=lambda: None, teardown=close_opened)
    rebuild = per_run(
        timed_open, rounds=rounds, setup=lambda: _drop_index(directory), teardown=close_opened
    )
    n = len(blocks)

    def row(label: str, t: Timing, *, rate: bool = True) -> list[object]:
        return [
            label,
            duration(t.seconds),
            si(txs / t.seconds, " tx/s") if rate else "",
            f"{nbytes / t.seconds / 1e6:,.0f} MB/s" if rate else "",
            ratio(t.seconds / scan.seconds),
        ]

    report.table(
        f"Read and recovery: ledger of {n} blocks, {txs:,} tx, {nbytes / 1e6:.1f} MB",
        ["operation", "time", "tx rate", "bytes", "vs raw scan (time)"],
        [
            row("read: store.blocks(), every block verified", read),
            row("audit: store.verify(committee), 3 sigs/block", audit),
            row("open, index present", reopen, rate=False),
            row("open after deleting index.sqlite (rebuild)", rebuild),
            row("raw scan: read segments + cbor2.loads (baseline)", scan),
        ],
        caption=f"Median of {rounds} rounds (open with index: {max(rounds, 5)}).",
    )
    report.figure("read.tx_per_s", txs / read.seconds, "tx/s")
    report.figure("read.mb_per_s", nbytes / read.seconds / 1e6, "MB/s")
    report.figure("read.ms_per_block", read.ms / n, "ms")
    report.figure("read.raw_scan_tx_per_s", txs / scan.seconds, "tx/s")
    report.figure("read.store_over_raw", scan.seconds / read.seconds, "ratio of tx/s")
    report.figure("audit.tx_per_s", txs / audit.seconds, "tx/s")
    report.figure("open.with_index_ms", reopen.ms, "ms")
    report.figure("open.rebuild_index_ms", rebuild.ms, "ms")
    report.figure("open.rebuild_blocks_per_s", n / rebuild.seconds, "blocks/s")


def _filesystem(path: Path) -> str:
    """The file system type holding ``path`` (best effort, from /proc/mounts)."""
    best, kind = "", "unknown"
    try:
        real = str(path.resolve())
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and real.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument(
        "--dir", metavar="DIR", help="where to make the temporary ledgers (default: system temp)"
    )
    args = p.parse_args(argv)
    settle_allocator()
    report = Report("ledger", quick=args.quick)
    cfg = Settings.of(args.quick)
    work = Path(tempfile.mkdtemp(prefix="bft-ledger-bench-", dir=args.dir))
    try:
        report.header("Ledger benchmark")
        report.note(f"ledgers in {work} ({_filesystem(work)})")
        builder = ChainBuilder(random.Random(7), cfg.txs_per_block, cfg.payload_size)
        started = time.perf_counter()
        blocks = builder.next_blocks(cfg.blocks)
        built = time.perf_counter() - started
        txs = cfg.blocks * cfg.txs_per_block
        report.note(
            f"built {cfg.blocks} certified blocks ({txs:,} tx) in {duration(built)} "
            f"({si(txs / built, ' tx/s')}, untimed below)"
        )
        report.figure("build.tx_per_s", txs / built, "tx/s")
        bench_append(report, cfg, work, blocks, txs)
        bench_sustained(report, cfg, work)
        bench_read_and_open(report, cfg, work, builder, blocks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        report.write_json(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``bft`` command.

Errors that a user can act on (a bad file, a wrong argument, a corrupt ledger) print one line on
standard error and exit with status 2 (or 1 where a check found the data invalid). Anything
unexpected prints one line too; ``BFT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

EXIT_INVALID = 1
EXIT_ERROR = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        self.code = code
        super().__init__(message)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


# ---------------------------------------------------------------------------------- keygen


def cmd_keygen(args: argparse.Namespace) -> int:
    from crypto import Committee, SigningKey
    from crypto.keyfiles import committee_toml, write_committee, write_secret_key

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.client:
        path = out / f"client-{args.client}.key"
        key = SigningKey.generate()
        write_secret_key(path, key, chain_id=args.chain_id, role="client", id=args.client)
        print(f"wrote {path} (client {args.client}, public key {key.public_key.hex()})")
        return 0
    if args.n < 1:
        raise CliError("-n must be at least 1")
    existing = [
        out / f"replica-{i}.key" for i in range(args.n) if (out / f"replica-{i}.key").exists()
    ]
    if existing or (out / "committee.toml").exists():
        raise CliError(f"{out} already holds keys; refusing to overwrite them")
    keys = [SigningKey.generate() for _ in range(args.n)]
    committee = Committee(args.chain_id, [k.public_key for k in keys], args.protocol)
    for i, key in enumerate(keys):
        write_secret_key(
            out / f"replica-{i}.key", key, chain_id=args.chain_id, role="replica", id=i
        )
    write_committee(out / "committee.toml", committee)
    print(f"wrote {args.n} replica keys (mode 0600) and {out / 'committee.toml'}")
    if args.verbose:
        print(committee_toml(committee), end="")
    return 0


# ---------------------------------------------------------------------------------- ledger


def _open_ledger(path: str) -> Any:
    from ledger.store import LedgerStore

    return LedgerStore.open(path, readonly=True)


def _load_committee(path: str | None) -> Any:
    if path is None:
        return None
    from crypto.keyfiles import load_committee

    return load_committee(Path(path))


def _header_json(header: Any) -> dict[str, Any]:
    return {
        "chain_id": header.chain_id,
        "height": header.height,
        "prev_hash": header.prev_hash.hex(),
        "tx_root": header.tx_root.hex(),
        "tx_count": header.tx_count,
        "protocol": header.protocol,
        "view": header.view,
        "proposer": header.proposer,
    }


def _certificate_json(cert: Any) -> dict[str, Any]:
    return {
        "statement": cert.statement.hex(),
        "signers": list(cert.signer_ids),
        "signatures": [s.hex() for s in cert.signatures],
    }


def _tx_json(raw: bytes) -> dict[str, Any]:
    from crypto import CodecError
    from ledger import Transaction, txid_of

    out: dict[str, Any] = {"txid": txid_of(raw).hex(), "raw": raw.hex()}
    try:
        tx = Transaction.decode(raw)
    except CodecError as exc:
        out["error"] = str(exc)
        return out
    out.update(
        client=tx.client.hex(), seq=tx.seq, payload=tx.payload.hex(), signature=tx.signature.hex()
    )
    return out


def _block_json(block: Any, with_txs: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "height": block.height,
        "hash": block.hash().hex(),
        "header": _header_json(block.header),
        "certificate": _certificate_json(block.certificate),
    }
    if with_txs:
        doc["txs"] = [_tx_json(t) for t in block.txs]
    return doc


def _load_schedule(specs: list[str] | None) -> Any:
    """``--committee FILE[@HEIGHT]`` options: one committee, or one per height range."""
    if not specs:
        return None
    from ledger import CommitteeSchedule

    epochs = []
    for spec in specs:
        path, _, height = spec.rpartition("@") if "@" in spec else (spec, "", "1")
        try:
            first = int(height)
        except ValueError:
            raise CliError(f"--committee {spec!r}: expected FILE or FILE@HEIGHT") from None
        epochs.append((first, _load_committee(path)))
    epochs.sort(key=lambda e: e[0])
    if len(epochs) == 1:
        return epochs[0][1]
    try:
        return CommitteeSchedule(epochs)
    except ValueError as exc:
        raise CliError(f"--committee: {exc}") from None


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from ledger import BlockError, CorruptRecord

    committee = _load_schedule(args.committee)
    console = _console()
    with _open_ledger(args.path) as store:
        try:
            summary = store.verify(committee, check_transactions=args.transactions)
        except (BlockError, CorruptRecord) as exc:
            raise CliError(
                f"{args.path}: invalid at height {exc.height}: {exc.reason}", EXIT_INVALID
            ) from None
        checks = ["hash chain", "Merkle roots"]
        if committee is not None:
            epochs = getattr(committee, "epochs", None)
            if epochs:
                ranges = ", ".join(f"{c.protocol} from height {h}" for h, c in epochs)
                checks.append(f"certificates ({ranges})")
            else:
                checks.append(f"certificates (committee of {committee.n})")
        if args.transactions:
            checks.append("transactions and client signatures")
        console.print(
            f"[green]OK[/green] {args.path}: chain {summary.chain_id!r}, height {summary.height}, "
            f"{summary.transactions} transactions; checked {', '.join(checks)}"
        )
        console.print(f"last block hash {summary.last_hash.hex()}")
        if store.tail_dropped:
            console.print(
                f"[yellow]note[/yellow]: {store.tail_dropped} bytes of torn tail after height "
                f"{summary.height} were ignored (a writer opening the ledger truncates them)"
            )
        if committee is None:
            console.print("[yellow]note[/yellow]: certificates not checked (give --committee)")
    return 0


def cmd_ledger_show(args: argparse.Namespace) -> int:
    console = _console()
    with _open_ledger(args.path) as store:
        if args.height is not None:
            block = store.get(args.height)
            if args.json:
                print(json.dumps(_block_json(block, with_txs=args.txs), indent=2))
                return 0
            doc = _block_json(block, with_txs=False)
            from rich.table import Table

            table = Table(title=f"block {block.height}", show_header=False)
            table.add_row("hash", doc["hash"])
            for key, value in doc["header"].items():
                table.add_row(key, str(value))
            table.add_row("signers", ", ".join(map(str, doc["certificate"]["signers"])) or "-")
            console.print(table)
            if args.txs:
                for entry in (_tx_json(t) for t in block.txs):
                    console.print(
                        f"{entry['txid']}  seq={entry.get('seq')}  client={entry.get('client')}"
                    )
            return 0
        stats = store.statistics()
        doc = {
            "path": str(args.path),
            "chain_id": store.chain_id,
            "height": store.height,
            "last_hash": store.last_hash.hex(),
            "segments": stats.segments,
            "bytes": stats.bytes_on_disk,
            "damage": None if store.damage is None else str(store.damage.error()),
            "torn_tail_bytes": store.tail_dropped,
        }
        if args.json:
            print(json.dumps(doc, indent=2))
            return 0
        from rich.table import Table

        table = Table(title=f"ledger {args.path}", show_header=False)
        for key, value in doc.items():
            table.add_row(key, "-" if value is None else str(value))
        console.print(table)
    return 0


def cmd_ledger_export(args: argparse.Namespace) -> int:
    out = sys.stdout
    with _open_ledger(args.path) as store:
        stop = args.to if args.to is not None else store.height
        for block in store.blocks(args.start, stop):
            out.write(json.dumps(_block_json(block), separators=(",", ":")))
            out.write("\n")
    return 0


def _parse_txid(text: str) -> bytes:
    try:
        txid = bytes.fromhex(text)
    except ValueError:
        raise CliError(f"transaction id {text!r} is not hex") from None
    if len(txid) != 32:
        raise CliError("a transaction id is 32 bytes (64 hex digits)")
    return txid


def cmd_ledger_proof(args: argparse.Namespace) -> int:
    txid = _parse_txid(args.txid)
    with _open_ledger(args.path) as store:
        receipt = store.receipt(txid)
    if receipt is None:
        raise CliError(f"{args.path}: no transaction {txid.hex()}", EXIT_INVALID)
    encoded = receipt.encode()
    summary = {
        "txid": txid.hex(),
        "height": receipt.height,
        "index": receipt.index,
        "block_hash": receipt.header.hash().hex(),
        "signers": list(receipt.certificate.signer_ids),
        "receipt": encoded.hex(),
    }
    if args.out:
        Path(args.out).write_bytes(encoded)
        summary["written_to"] = args.out
        del summary["receipt"]
    print(json.dumps(summary, indent=2))
    return 0


def _read_receipt(path: str) -> Any:
    from crypto import CodecError
    from ledger import Receipt

    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    text = data.strip()
    if text and all(c in b"0123456789abcdefABCDEF" for c in text):
        data = bytes.fromhex(text.decode())
    elif text.startswith(b"{"):
        try:
            data = bytes.fromhex(json.loads(text)["receipt"])
        except (ValueError, KeyError, TypeError):
            raise CliError(f"{path}: JSON without a hex 'receipt' field") from None
    try:
        return Receipt.decode(data)
    except CodecError as exc:
        raise CliError(f"{path}: not a receipt: {exc}") from None


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    from ledger import ReceiptError

    committee = _load_committee(args.committee)
    receipt = _read_receipt(args.receipt)
    try:
        receipt.verify(committee)
    except ReceiptError as exc:
        raise CliError(f"{args.receipt}: receipt is invalid: {exc.reason}", EXIT_INVALID) from None
    print(
        f"OK transaction {receipt.txid.hex()} committed at height {receipt.height}, "
        f"position {receipt.index}, block {receipt.header.hash().hex()[:16]}, "
        f"signed by replicas {', '.join(map(str, receipt.certificate.signer_ids))}"
    )
    return 0


# ---------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from bft.demo import run_demo

    console = _console()
    directory = Path(args.dir)
    if directory.exists() and any(directory.iterdir()):
        raise CliError(f"{directory} is not empty; give a new --dir")
    console.print(
        f"[bold]Building a {args.blocks}-block ledger[/bold] for a committee of {args.n} "
        f"in {directory} ({args.txs_per_block} transactions of {args.payload} bytes per block)"
    )
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("appending blocks (group commit)", total=args.blocks)
        result = run_demo(
            directory,
            chain_id=args.chain_id,
            n=args.n,
            blocks=args.blocks,
            txs_per_block=args.txs_per_block,
            payload_size=args.payload,
            seed=args.seed,
            clock=time.perf_counter,
            progress=lambda h: progress.update(task, completed=h),
        )
    rate = result.transactions / result.seconds_appending if result.seconds_appending else 0.0
    console.print(
        f"appended {result.height} blocks, {result.transactions} transactions "
        f"({result.signed_transactions} client-signed) at {rate:,.0f} tx/s with fsync"
    )
    committee = str(result.committee_file)
    ledger_path = str(result.ledger_dir)
    console.print("\n[bold]$ bft ledger verify[/bold] --committee --transactions")
    cmd_ledger_verify(
        argparse.Namespace(path=ledger_path, committee=[committee], transactions=True)
    )
    receipt_file = directory / "receipt.cbor"
    console.print(f"\n[bold]$ bft ledger proof[/bold] {result.sample_txid.hex()[:16]}...")
    with _open_ledger(ledger_path) as store:
        receipt = store.receipt(result.sample_txid)
    if receipt is None:
        raise CliError("demo transaction missing from its own ledger")
    receipt_file.write_bytes(receipt.encode())
    console.print(f"receipt of {len(receipt.encode())} bytes written to {receipt_file}")
    console.print("\n[bold]$ bft receipt verify[/bold]")
    cmd_receipt_verify(argparse.Namespace(receipt=str(receipt_file), committee=committee))
    console.print(
        f"\nTry: bft ledger show {ledger_path} --height 1    "
        f"bft ledger export {ledger_path} --jsonl | head -c 600"
    )
    return 0


# ---------------------------------------------------------------------------------- replica


def cmd_replica(args: argparse.Namespace) -> int:
    import trio

    from bft.node import ConfigError, ReplicaError, load_replica_config, serve

    try:
        config = load_replica_config(args.config)
        trio.run(serve, config)
    except (ConfigError, ReplicaError) as exc:
        raise CliError(str(exc)) from None
    return 0


# ---------------------------------------------------------------------------------- sim

INVARIANTS = (
    ("S1", "agreement"),
    ("S2", "integrity"),
    ("S3", "durability"),
    ("S4", "validity"),
    ("L", "liveness"),
)


def _sim_config(args: argparse.Namespace, seed: int) -> Any:
    from bft.protocols import spec
    from bft.sim import SimConfig, WorkloadConfig
    from bft.sim.scenarios import parse_faults, random_scenario

    protocol = spec(args.protocol)
    if not 1 <= args.n <= 100:
        raise CliError("--n must be between 1 and 100")
    tick_us = 10_000
    duration = args.rounds * tick_us
    if args.faults == "random":
        config = random_scenario(
            protocol, args.n, seed, duration=duration, real_crypto=args.real_crypto
        )
    else:
        workload = WorkloadConfig(
            clients=args.clients,
            requests_per_client=args.requests,
            submit_every=max(1_000, duration // max(args.requests, 1)),
            signed=args.signed,
        )
        config = SimConfig(
            spec=protocol,
            n=args.n,
            seed=seed,
            duration=duration,
            tick_us=tick_us,
            workload=workload,
            real_crypto=args.real_crypto or args.signed,
            encode_messages=True,
        )
        try:
            config = parse_faults(args.faults or "", config)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    return config


def cmd_sim(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bft.sim import run

    console = _console()
    if args.count < 1:
        raise CliError("--count must be at least 1")
    started = time.perf_counter()
    seeds = range(args.seed, args.seed + args.count)
    if args.json:
        reports = [run(_sim_config(args, seed)) for seed in seeds]
        print(
            json.dumps(
                [
                    {
                        "seed": r.seed,
                        "ok": r.ok,
                        "violations": [str(v) for v in r.violations],
                        "stats": r.stats,
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
        return EXIT_INVALID if any(not r.ok for r in reports) else 0
    # Streamed: only the aggregates and the first few failures are kept, however many seeds.
    keys = ("height", "txs", "view_changes", "acked", "indeterminate", "sent", "dropped")
    lows: dict[str, int] = {}
    highs: dict[str, int] = {}
    violated: set[str] = set()
    failed: list[Any] = []
    failures = 0
    first = None
    for seed in seeds:
        report = run(_sim_config(args, seed))
        first = first or report
        for key in keys:
            value = report.stats.get(key, 0)
            lows[key] = min(lows.get(key, value), value)
            highs[key] = max(highs.get(key, value), value)
        violated.update(v.invariant for v in report.violations)
        if not report.ok:
            failures += 1
            if len(failed) < 3:
                failed.append(report)
    elapsed = time.perf_counter() - started
    table = Table(title=f"bft sim: {args.protocol}, n={args.n}, faults: {args.faults or 'none'}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    if args.count == 1 and first is not None:
        for key, value in first.stats.items():
            table.add_row(key.replace("_", " "), str(value))
    else:
        table.add_row("seeds", f"{args.seed}..{args.seed + args.count - 1}")
        for key in keys:
            table.add_row(f"{key.replace('_', ' ')} (min/max)", f"{lows[key]} / {highs[key]}")
    for code, name in INVARIANTS:
        verdict = "[red]VIOLATED[/red]" if code in violated else "[green]held[/green]"
        table.add_row(f"{code} {name}", verdict)
    table.add_row("wall time", f"{elapsed:.2f} s ({args.count / elapsed * 60:,.0f} scenarios/min)")
    console.print(table)
    for report in failed:
        print(report.describe())
    if failures:
        console.print(
            f"[red]{failures} of {args.count} scenarios violated an invariant[/red]; "
            "replay one with --seed"
        )
        return EXIT_INVALID
    return 0


def _stop_running(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_twins(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from bft.twins_soak import SoakParams, SoakState, soak, summary

    console = _console()
    if args.count < 1:
        raise CliError("--count must be at least 1")
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.chunk < 1:
        raise CliError("--chunk must be at least 1")
    if args.n < 4:
        raise CliError("--n must be at least 4 (3f+1 with f >= 1)")
    if not 1 <= args.twins <= args.n:
        raise CliError(f"--twins must be between 1 and {args.n}")
    params = SoakParams(
        protocol=args.protocol,
        space=args.space,
        n=args.n,
        twins=args.twins,
        seed=args.seed,
        count=args.count,
        rounds=args.rounds,
        chunk=args.chunk,
    )
    if args.count == 1:
        from bft.protocols import spec
        from bft.sim import run
        from bft.sim.scenarios import twins_config

        scenario, config = twins_config(
            spec(args.protocol),
            args.seed,
            n=args.n,
            twins=args.twins,
            rounds=args.rounds,
            space=args.space,
        )
        report = run(config)
        print(scenario.describe().replace("; ", "\n"))
        print(report.describe())
        return 0 if report.ok else EXIT_INVALID
    path = Path(args.state) if args.state else None
    try:
        state = SoakState.load(path, params) if path else SoakState(params=params)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    resumed = state.scenarios
    if resumed:
        print(f"resuming from {path}: {resumed:,} scenarios already run", file=sys.stderr)
    progress = Progress(
        TextColumn(f"twins {args.protocol}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} | failed {task.fields[failed]}"),
        TimeRemainingColumn(),
        console=console,
        transient=not console.is_terminal,
        disable=args.json,
    )
    save = (lambda s: s.save(path)) if path else None
    # Stop cleanly on SIGTERM, and on SIGINT even when the shell that started the run in the
    # background set it to be ignored: the state written after the last chunk is kept.
    stops = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, _stop_running) for sig in stops}
    try:
        with progress:
            task = progress.add_task(
                "run", total=params.count, completed=resumed, rate="", failed=state.failed
            )

            wall_before = state.wall_s

            def on_chunk(s: SoakState, _: object) -> None:
                rate = (s.scenarios - resumed) / max(s.wall_s - wall_before, 1e-9) * 60
                progress.update(
                    task, completed=s.scenarios, rate=f"{rate:,.0f}/min", failed=s.failed
                )

            soak(state, args.workers, save=save, on_chunk=on_chunk)
    except KeyboardInterrupt:
        where = f"; run the same command to resume from {path}" if path else ""
        raise CliError(f"stopped after {state.scenarios:,} scenarios{where}", code=130) from None
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    figures = summary(state)
    if args.json:
        print(json.dumps({"params": asdict(params), **figures}, indent=2))
    else:
        table = Table(
            title=f"bft twins: {args.protocol}, n={args.n}, {args.twins} twin(s), "
            f"space {args.space}"
        )
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row("seeds", f"{args.seed}..{args.seed + args.count - 1}")
        for key, value in figures.items():
            shown = f"{value:,}" if isinstance(value, int) else str(value)
            table.add_row(key.replace("_", " "), shown)
        table.add_row(
            "safety (S1-S4)",
            "[red]VIOLATED[/red]" if state.failed else "[green]held[/green]",
        )
        console.print(table)
    for failure in state.failures[:3]:
        print(f"seed {failure.seed}: {failure.scenario}\n{failure.report}", file=sys.stderr)
    if state.failed:
        print(
            f"{state.failed:,} of {state.scenarios:,} scenarios violated an invariant; "
            "replay one with --count 1 --seed SEED",
            file=sys.stderr,
        )
        return EXIT_INVALID
    return 0


# ---------------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the checkout's ``bench/cluster_bench.py`` (bench/ is not part of the package)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "cluster_bench.py").is_file():
        raise CliError(
            "bft bench runs from a source checkout (bench/ is not installed with the package): "
            "clone the repository, pip install -e '.[bench]' there and run it from that directory"
        )
    command = [sys.executable, "-m", "bench.cluster_bench", *args.bench_args]
    return subprocess.call(command, cwd=root)


# ---------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bft", description="Byzantine-fault-tolerant ordering service"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more output and logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("keygen", help="make replica keys and a committee file, or a client key")
    p.add_argument("--chain-id", required=True, help="the chain these keys belong to")
    p.add_argument("-n", type=int, default=4, help="number of replicas (default 4)")
    p.add_argument(
        "--protocol",
        choices=("pbft", "hotstuff", "raft"),
        default="pbft",
        help="the protocol the committee runs; fixes what its certificates must be",
    )
    p.add_argument("--client", metavar="NAME", help="make one client key instead")
    p.add_argument("--out", required=True, help="directory for the key files")
    p.set_defaults(func=cmd_keygen)

    ledger = sub.add_parser("ledger", help="inspect and verify a ledger directory")
    lsub = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    p = lsub.add_parser("verify", help="check hash chain, Merkle roots and certificates")
    p.add_argument("path")
    p.add_argument(
        "--committee",
        action="append",
        metavar="FILE[@HEIGHT]",
        help="committee file: also check every certificate; repeat with @HEIGHT for a chain "
        "that changed mode (each committee governs from its height on)",
    )
    p.add_argument(
        "--transactions", action="store_true", help="also decode transactions, check signatures"
    )
    p.set_defaults(func=cmd_ledger_verify)
    p = lsub.add_parser("show", help="summary of a ledger, or one block")
    p.add_argument("path")
    p.add_argument("--height", type=int)
    p.add_argument("--txs", action="store_true", help="list the block's transactions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ledger_show)
    p = lsub.add_parser("export", help="blocks as JSON lines (bytes as hex)")
    p.add_argument("path")
    p.add_argument("--jsonl", action="store_true", required=True, help="JSON lines (the format)")
    p.add_argument("--from", dest="start", type=int, default=1)
    p.add_argument("--to", type=int)
    p.set_defaults(func=cmd_ledger_export)
    p = lsub.add_parser("proof", help="a receipt proving a transaction committed")
    p.add_argument("path")
    p.add_argument("txid", help="transaction id (hex)")
    p.add_argument("--out", help="write the receipt (CBOR) to this file")
    p.set_defaults(func=cmd_ledger_proof)

    receipt = sub.add_parser("receipt", help="check receipts offline")
    rsub = receipt.add_subparsers(dest="receipt_command", metavar="ACTION", required=True)
    p = rsub.add_parser("verify", help="verify a receipt against a committee file")
    p.add_argument(
        "receipt", help="receipt file (CBOR, hex, or the JSON of 'ledger proof'), - for stdin"
    )
    p.add_argument("--committee", required=True)
    p.set_defaults(func=cmd_receipt_verify)

    p = sub.add_parser("replica", help="run one replica (until SIGTERM)")
    p.add_argument("--config", required=True, help="the replica's TOML configuration")
    p.set_defaults(func=cmd_replica)

    p = sub.add_parser(
        "sim",
        help="run a protocol in the deterministic simulator under faults and check the invariants",
        description="Run a protocol in the deterministic simulator and check agreement, integrity, "
        "durability, validity and liveness. A run replays exactly from its seed. Faults: "
        "drop=P, dup=P, delay=BASE_US:JITTER_US, crash=R@MS[:MS], partition=A.B|C.D@MS:MS, "
        "cut=A>B@MS:MS, silent=R, twins=K (comma-separated), or 'random'.",
    )
    p.add_argument("--protocol", default="pbft", choices=("pbft", "hotstuff", "raft"))
    p.add_argument("--n", type=int, default=4, help="replicas (3f+1 for BFT, 2f+1 for raft)")
    p.add_argument("--faults", default="", help="fault list (see above) or 'random'")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=1, help="run this many seeds from --seed")
    p.add_argument("--rounds", type=int, default=200, help="ticks of 10 ms in the faulty phase")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--requests", type=int, default=40, help="requests per client")
    p.add_argument("--signed", action="store_true", help="clients sign requests (real Ed25519)")
    p.add_argument("--real-crypto", action="store_true", help="replicas sign with real Ed25519")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser(
        "twins",
        help="run many seeded Twins scenarios (PBFT, HotStuff) over worker processes",
        description="Run seeded Twins scenarios (Bano et al.): the first --twins replicas get a "
        "twin sharing their key; each round (view) of the schedule has its own partition of the "
        "instances into at most two groups and its own leader, sampled uniformly. Every safety "
        "invariant is checked after each scenario; a failing seed replays with --count 1. With "
        "--state the run can be stopped and resumed.",
    )
    p.add_argument("--protocol", default="pbft", choices=("pbft", "hotstuff"))
    p.add_argument("--n", type=int, default=4, help="replicas")
    p.add_argument("--twins", type=int, default=1, help="replicas with a twin (f keeps safety)")
    p.add_argument(
        "--space",
        default="both",
        choices=("all", "quorum", "both"),
        help="all partitions; only those leaving a quorum in some group; or both by seed parity",
    )
    p.add_argument("--rounds", type=int, default=0, help="scheduled rounds (0: 6 pbft, 7 hotstuff)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--count", type=int, default=1, help="scenarios (seeds from --seed)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument(
        "--chunk", type=int, default=250, help="scenarios per unit of work and per state write"
    )
    p.add_argument("--state", help="state file: written after every chunk, resumed from if present")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_twins)

    p = sub.add_parser(
        "demo", help="build, store, verify and prove a demonstration ledger (no replicas)"
    )
    p.add_argument("--dir", default="demo-ledger", help="new directory for keys and ledger")
    p.add_argument("--chain-id", default="demo")
    p.add_argument("-n", type=int, default=4)
    p.add_argument("--blocks", type=int, default=40)
    p.add_argument("--txs-per-block", type=int, default=500)
    p.add_argument("--payload", type=int, default=256, help="payload bytes per transaction")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "bench",
        help="run the cluster benchmark from a source checkout ('bft bench --help')",
        add_help=False,
        prefix_chars="+",  # every argument goes to the benchmark's own parser
    )
    p.add_argument("bench_args", nargs="*")
    p.set_defaults(func=cmd_bench)

    from bft.node.commands import add_parsers as add_operator_parsers
    from bft.testbed.cli import add_parsers

    add_parsers(sub)
    add_operator_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "replica" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from crypto import CodecError, CryptoError
    from ledger import LedgerError

    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"bft: error: {exc}", file=sys.stderr)
        return exc.code
    except (CryptoError, LedgerError, CodecError, ValueError) as exc:
        print(f"bft: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bft: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("bft: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("BFT_DEBUG"):
            raise
        print(
            f"bft: internal error: {type(exc).__name__}: {exc} (BFT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""``bft testbed demo``: the whole service in one command.

Make (or reuse) a cluster directory, start every replica as a process, commit a workload through
the client library with a progress bar, wait until every replica holds the same height, stop the
replicas with SIGTERM, then verify every replica's ledger against the committee (hash chain,
Merkle roots, quorum certificates), check that all ledgers are identical block hash by block
hash and that every acknowledged transaction is in each exactly once, and print the summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .layout import CLUSTER_FILE, init_cluster
from .processes import TestbedError
from .testbed import Testbed
from .verify import verify_cluster


def run_demo(
    directory: Path,
    *,
    console: Any,
    protocol: str | None = None,
    n: int | None = None,
    count: int = 5000,
    size: int = 256,
    window: int = 1000,
    plaintext: bool = False,
) -> int:
    """Run the demo; return the exit status (0 when everything verified)."""
    from rich.table import Table

    from .cli import _load_with_progress, _print_stopped, _run, _start_and_wait, _summary_table
    from .status import render

    if count < 1 or window < 1 or size < 1:
        raise TestbedError("--count, --window and --size must be at least 1")
    directory = Path(directory)
    if (directory / CLUSTER_FILE).exists():
        bed = Testbed(directory)
        if protocol is not None and protocol != bed.cluster.protocol:
            raise TestbedError(
                f"{directory} holds a {bed.cluster.protocol} cluster, not {protocol}; "
                "give another --dir"
            )
        console.print(f"[bold]reusing the {bed.cluster.protocol} cluster in {directory}[/bold]")
    else:
        if directory.exists() and any(directory.iterdir()):
            raise TestbedError(f"{directory} is not empty and holds no cluster; give a new --dir")
        protocol = protocol or "pbft"
        n = n if n is not None else (3 if protocol == "raft" else 4)
        init_cluster(directory, protocol=protocol, n=n, plaintext=plaintext)
        bed = Testbed(directory)
        console.print(
            f"[bold]made a {protocol} cluster of {n} replicas in {directory}[/bold] "
            f"(keys, {'plaintext' if plaintext else 'mutual TLS under a cluster CA'}, "
            "configs on free loopback ports)"
        )
    cluster = bed.cluster
    try:
        _start_and_wait(bed, console)
        console.print(render(_run(bed.view), f"{cluster.protocol} testbed: every replica up"))
        result = _load_with_progress(
            console, bed.client_config(), count, None, window, size, keep_receipts=True
        )
        console.print(_summary_table(result, f"{count} transactions of {size} B"))
        with console.status("waiting for every replica to reach the same height"):
            height = _run(bed.wait_converged, 30.0)
        console.print(f"every replica at height {height}")
    finally:
        console.print("stopping the replicas (SIGTERM)")
        outcome = bed.stop()
        _print_stopped(console, outcome)
    clean = all(how == "exited" for how in outcome.values())

    with console.status("verifying every replica's ledger"):
        report = verify_cluster(cluster, (r.txid for r in result.receipts))
    table = Table(title="ledgers, verified against keys/committee.toml", title_justify="left")
    for name in ("replica", "height", "transactions", "last block hash", "verdict"):
        table.add_column(name, justify="right" if name != "verdict" else "left")
    for check in report.ledgers:
        table.add_row(
            str(check.replica),
            str(check.height),
            f"{check.transactions:,}",
            check.last_hash.hex()[:16] if check.last_hash else "-",
            "[red]" + check.error + "[/red]" if check.error else "[green]valid[/green]",
        )
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]problem[/red]: {problem}")
    ok = report.identical and clean and result.committed == count
    if ok:
        console.print(
            f"[bold green]OK[/bold green]: {result.committed:,} transactions committed at "
            f"{result.tx_per_s:,.0f} tx/s (p50 {result.percentile(50):.0f} ms, "
            f"p99 {result.percentile(99):.0f} ms); {cluster.n} ledgers of height "
            f"{report.ledgers[0].height} identical and verified; every acknowledged "
            "transaction in each exactly once"
        )
    else:
        console.print("[bold red]the demo found a problem[/bold red] (see above)")
    console.print(
        f"\nTry: bft testbed up --dir {directory}    then, in another terminal: "
        f"bft testbed load --dir {directory} / bft tail --dir {directory} / "
        f"bft testbed fault --dir {directory} kill 0"
    )
    return 0 if ok else 1

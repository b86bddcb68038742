"""The ``bft testbed`` commands, and the cluster client commands ``bft submit``, ``bft tail`` and
``bft status``.

Every command takes the cluster directory (``--dir``) made by ``bft testbed init``; errors are one
line (``CliError``), like the rest of the ``bft`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bft.cli import EXIT_INVALID, CliError


def _user_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the testbed's and the client's errors into one-line CLI errors."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        from bft.client import ClientError
        from bft.testbed.layout import LayoutError
        from bft.testbed.processes import TestbedError

        try:
            return fn(args)
        except (LayoutError, TestbedError, ClientError) as exc:
            raise CliError(str(exc)) from None

    return wrapper


def _console() -> Any:
    from rich.console import Console

    # Tables are wide: when the output is not a terminal (a pipe, a CI log), do not squeeze them
    # into 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _testbed(args: argparse.Namespace) -> Any:
    from bft.testbed.testbed import Testbed

    return Testbed(Path(args.dir))


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    import trio

    return trio.run(fn, *args)


# ---------------------------------------------------------------------------------- init


@_user_errors
def cmd_init(args: argparse.Namespace) -> int:
    from bft.testbed.layout import init_cluster

    n = args.n if args.n is not None else (3 if args.protocol == "raft" else 4)
    minimum = 1
    if n < minimum or n > 100:
        raise CliError("-n must be between 1 and 100")
    directory = Path(args.dir)
    cluster = init_cluster(
        directory,
        protocol=args.protocol,
        n=n,
        chain_id=args.chain_id,
        plaintext=args.plaintext,
        require_client_signatures=args.client_signatures,
        addresses=_host_addresses(args, n),
    )
    if args.metrics_port is not None:
        hosts = [cluster.peers[i][0] for i in range(n)]
        for i in range(n):
            # One port on every machine; on one machine, one port each.
            port = args.metrics_port + (hosts[:i].count(hosts[i]))
            path = cluster.replica_config(i)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f'\n[metrics]\nlisten = "{hosts[i]}:{port}"\n')
    f = (n - 1) // 2 if args.protocol == "raft" else (n - 1) // 3
    ports = sorted(p for _, p in [*cluster.peers.values(), *cluster.clients.values()])
    print(
        f"made a {args.protocol} cluster of {n} replicas (tolerates f={f}) in {directory}: "
        f"keys, {'no TLS (plaintext)' if args.plaintext else 'TLS CA and certificates'}, "
        f"replica-0..{n - 1}.toml, ports {ports[0]}..{ports[-1]}"
    )
    if args.hosts is None:
        print(f"next: bft testbed up --dir {directory}")
    else:
        print(
            f"next: bft config check {directory}/replica-*.toml, then copy each replica's "
            "files to its machine (docs/operations.md, 'Deploying across machines')"
        )
    return 0


def _host_addresses(
    args: argparse.Namespace, n: int
) -> dict[int, tuple[tuple[str, int], tuple[str, int]]] | None:
    """``--hosts`` (one per replica) with ``--peer-port`` and ``--client-port``: a cluster for
    several machines. Replicas that share a host get consecutive ports."""
    if args.hosts is None:
        if args.peer_port is not None or args.client_port is not None:
            raise CliError("--peer-port and --client-port go with --hosts")
        return None
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if len(hosts) != n:
        raise CliError(f"--hosts names {len(hosts)} hosts for {n} replicas")
    peer, client = args.peer_port or 7000, args.client_port or 8000
    for name, port in (("--peer-port", peer), ("--client-port", client)):
        if not 1 <= port <= 65535 - n:
            raise CliError(f"{name} must be 1..{65535 - n}")
    addresses = {}
    for i, host in enumerate(hosts):
        k = hosts[:i].count(host)
        addresses[i] = ((host, peer + k), (host, client + k))
    if {a[0] for a in addresses.values()} & {a[1] for a in addresses.values()}:
        raise CliError("peer and client ports overlap on a host; move --client-port")
    return addresses


# ---------------------------------------------------------------------------------- up / down


def _start_and_wait(bed: Any, console: Any, timeout: float = 30.0) -> list[int]:
    from bft.testbed.processes import TestbedError

    started = bed.start()
    if started:
        console.print(
            f"started replicas {', '.join(map(str, started))} "
            f"(logs in {bed.directory / 'data'}/replica-<i>.log)"
        )
    try:
        with console.status("waiting for every replica to answer"):
            _run(bed.wait_ready, None, timeout)
    except (TestbedError, KeyboardInterrupt):
        bed.stop(started)
        raise
    return started


async def _live(bed: Any, console: Any, interval: float = 0.5) -> None:
    import trio
    from rich.live import Live

    from bft.client import open_client
    from bft.testbed.status import ask_statuses, assess, render

    title = f"{bed.cluster.protocol} testbed in {bed.directory} (Ctrl-C stops the cluster)"
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async with (
            open_client(bed.client_config(admin=True), wait=0) as client,
            trio.open_nursery() as nursery,
        ):

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            view = assess(bed.cluster, await ask_statuses(client, bed.n), bed.processes)
            with Live(render(view, title), console=console, refresh_per_second=4) as live:
                while True:
                    await trio.sleep(interval)
                    statuses = await ask_statuses(client, bed.n, timeout=interval)
                    live.update(render(assess(bed.cluster, statuses, bed.processes), title))


def _print_stopped(console: Any, outcome: dict[int, str]) -> None:
    if not outcome:
        console.print("no replica was running")
        return
    for replica, how in sorted(outcome.items()):
        colour = "green" if how == "exited" else "yellow"
        console.print(f"replica {replica}: [{colour}]{how}[/{colour}]")


@_user_errors
def cmd_up(args: argparse.Namespace) -> int:
    console = _console()
    bed = _testbed(args)
    _start_and_wait(bed, console, args.timeout)
    if args.detach:
        from bft.testbed.status import render

        console.print(render(_run(bed.view)))
        console.print(
            f"the cluster runs in the background; stop it with: bft testbed down --dir {args.dir}"
        )
        return 0
    try:
        _run(_live, bed, console)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("\nstopping the cluster")
        _print_stopped(console, bed.stop())
    return 0


@_user_errors
def cmd_down(args: argparse.Namespace) -> int:
    bed = _testbed(args)
    _print_stopped(_console(), bed.stop(timeout=args.timeout))
    return 0


# ---------------------------------------------------------------------------------- status


@_user_errors
def cmd_status(args: argparse.Namespace) -> int:
    from bft.testbed.status import render, to_json_text

    bed = _testbed(args)
    view = _run(bed.view, args.timeout)
    if args.json:
        print(to_json_text(view))
    else:
        _console().print(render(view))
    # For scripts: 0 while a quorum is healthy (the cluster can commit), 1 when not.
    return 0 if not view.verdict.startswith("NO QUORUM") else EXIT_INVALID


# ---------------------------------------------------------------------------------- transfer


@_user_errors
def cmd_transfer(args: argparse.Namespace) -> int:
    import time

    import trio

    from bft.client import open_client

    bed = _testbed(args)
    target = args.to
    if not 0 <= target < bed.n:
        raise CliError(f"no replica {target}: the cluster has replicas 0..{bed.n - 1}")

    async def transfer() -> str:
        view = await bed.view(timeout=2.0)
        leader = view.leader
        if leader is None:
            raise CliError("no leader to transfer from (bft status shows why)")
        if leader == target:
            return f"replica {target} already leads"
        began = time.monotonic()
        async with open_client(bed.client_config(admin=True), wait=0) as client:
            reply = await client.control(leader, "transfer", {"to": target}, timeout=5.0)
        if reply is None:
            raise CliError(f"replica {leader} (the leader) did not answer")
        if not reply.ok:
            raise CliError(f"replica {leader}: {reply.detail}")
        with trio.move_on_after(args.timeout):
            while True:
                view = await bed.view(timeout=1.0)
                if view.leader == target and view.leader_votes * 2 > bed.n:
                    took = (time.monotonic() - began) * 1000
                    return f"leadership moved from replica {leader} to {target} in {took:.0f} ms"
                await trio.sleep(0.05)
        raise CliError(
            f"replica {target} did not take over within {args.timeout:g} s "
            f"(leader now: {view.leader}); the old leader carries on"
        )

    print(_run(transfer))
    return 0


# ---------------------------------------------------------------------------------- load


@_user_errors
def cmd_load(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise CliError("--count must be at least 1")
    if args.size < 1 or args.size > 60_000:
        raise CliError("--size must be 1..60000 bytes")
    bed = _testbed(args)
    config = bed.client_config(sign=args.signed, timeout=args.timeout)
    console = _console()
    result = _load_with_progress(console, config, args.count, args.rate, args.window, args.size)
    if args.json:
        print(json.dumps(result.summary()))
    else:
        console.print(_summary_table(result, f"load: {args.count} transactions of {args.size} B"))
    return 0 if result.committed else EXIT_INVALID


def _load_with_progress(
    console: Any,
    config: Any,
    count: int,
    rate: float | None,
    window: int | None,
    size: int,
    keep_receipts: bool = False,
) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bft.node.memory import collecting_less_often
    from bft.testbed.load import LoadResult, run_load

    mode = f"open loop at {rate:g}/s" if rate else f"closed loop, window {window or 1000}"
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8,.0f} tx/s"),
        TextColumn("{task.fields[bad]}"),
        TimeElapsedColumn(),
    )
    # A load allocates a few short-lived objects per transaction: the collector's default
    # thresholds cost it ~8 % of its CPU (bft.node.memory.tune_gc).
    with collecting_less_often(), Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"committing ({mode})", total=count, rate=0.0, bad="")

        def update(result: LoadResult) -> None:
            bad = ""
            if result.refused or result.indeterminate:
                bad = f"[red]{result.refused} refused, {result.indeterminate} indeterminate[/red]"
            progress.update(task, completed=result.finished, rate=result.tx_per_s, bad=bad)

        return _run(
            functools.partial(
                run_load,
                config,
                count=count,
                rate=rate,
                window=window,
                size=size,
                keep_receipts=keep_receipts,
                progress=update,
            )
        )


def _summary_table(result: Any, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("committed", f"{result.committed:,}")
    table.add_row("refused", f"{result.refused:,}")
    table.add_row("indeterminate", f"{result.indeterminate:,}")
    table.add_row("wall time", f"{result.seconds:.2f} s")
    table.add_row("throughput", f"{result.tx_per_s:,.0f} tx/s")
    for p in (50, 95, 99):
        table.add_row(f"latency p{p}", f"{result.percentile(p):,.1f} ms")
    for reason, k in result.errors.most_common(3):
        table.add_row(f"error x{k}", reason)
    return table


# ---------------------------------------------------------------------------------- fault


@_user_errors
def cmd_fault(args: argparse.Namespace) -> int:
    from bft.testbed import faults

    if not hasattr(args, "dir"):
        raise CliError("give the cluster directory: bft testbed fault --dir DIR ...")
    console = _console()
    bed = _testbed(args)
    n = bed.n
    action = args.action
    processes = bed.processes
    if action in ("kill", "restart", "pause", "resume"):
        replica = faults.check_replica(args.replica, n)
        if action == "kill":
            pid = processes.kill(replica)
            console.print(f"replica {replica} (pid {pid}) killed with SIGKILL")
        elif action == "pause":
            pid = processes.pause(replica)
            console.print(f"replica {replica} (pid {pid}) paused (SIGSTOP); resume it with resume")
        elif action == "resume":
            pid = processes.resume(replica)
            console.print(f"replica {replica} (pid {pid}) resumed (SIGCONT)")
        else:
            if processes.pid(replica) is not None:
                _print_stopped(console, processes.stop([replica]))
            processes.start(replica)
            answers = _run(bed.wait_ready, [replica], args.timeout)
            console.print(
                f"replica {replica} restarted (pid {processes.pid(replica)}), "
                f"at height {answers[replica]['height']}; it catches up from its peers"
            )
        return 0
    if action == "partition":
        plan = faults.plan_partition(faults.parse_groups(args.groups, n), n)
    elif action == "slow":
        if args.delay < 0:
            raise CliError("--delay must not be negative")
        plan = faults.plan_link("slow", args.replica, n, args.delay / 1000)
    elif action == "drop":
        if not 0 <= args.probability <= 1:
            raise CliError("--probability must be between 0 and 1")
        plan = faults.plan_link("drop", args.replica, n, args.probability)
    elif action == "cut":
        plan = faults.plan_cut(args.sender, args.receiver, n)
    elif action == "heal":
        plan = faults.plan_heal(n)
    else:  # byzantine
        plan = faults.plan_byzantine(args.replica, args.mode, n)
        if args.mode != "honest" and not args.force:
            _check_byzantine_budget(bed, args.replica)
    told = _run(faults.apply, bed.client_config(admin=True), plan)
    for item in told:
        mark = "[green]ok[/green]" if item.ok else f"[red]not applied[/red]: {item.detail}"
        console.print(f"replica {item.replica}: {action} {mark}")
    if not any(t.ok for t in told):
        raise CliError(f"no replica took the {action} fault")
    return 0 if all(t.ok for t in told) else EXIT_INVALID


def _check_byzantine_budget(bed: Any, replica: int) -> None:
    from bft.testbed.status import fault_tolerance

    statuses = _run(bed.statuses)
    f, _ = fault_tolerance(bed.cluster.protocol, bed.n)
    byzantine = {i for i, s in statuses.items() if s and s.get("byzantine")} | {replica}
    if len(byzantine) > f:
        raise CliError(
            f"that makes replicas {sorted(byzantine)} Byzantine, more than f={f}: safety is no "
            "longer promised (add --force to do it anyway)"
        )


# ---------------------------------------------------------------------------------- demo


@_user_errors
def cmd_demo(args: argparse.Namespace) -> int:
    from bft.testbed.demo import run_demo

    return run_demo(
        Path(args.dir),
        console=_console(),
        protocol=args.protocol,
        n=args.n,
        count=args.count,
        size=args.size,
        window=args.window,
        plaintext=args.plaintext,
    )


# ---------------------------------------------------------------------------------- chaos


@_user_errors
def cmd_chaos(args: argparse.Namespace) -> int:
    import tempfile

    from bft.testbed.chaos import FAULT_KINDS, ChaosOptions, remove_run, run_chaos

    if args.duration <= 0:
        raise CliError("--duration must be positive")
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip()) if args.faults else None
    if kinds is not None:
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown:
            raise CliError(f"unknown fault {unknown[0]!r}; choose from {', '.join(FAULT_KINDS)}")
    options = ChaosOptions(
        protocol=args.protocol,
        duration=args.duration,
        seed=args.seed,
        n=args.n,
        clients=args.clients,
        window=args.window,
        netns=args.netns,
        **({"kinds": kinds} if kinds else {}),
    )
    if args.dir is not None:
        directory = Path(args.dir)
        if directory.exists() and any(directory.iterdir()):
            raise CliError(f"{directory} is not empty; give a new directory")
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="bft-chaos-"))
    console = _console()
    result = _run(lambda: run_chaos(options, directory, progress=console.print))
    if args.verbose or not result.ok:
        for event in result.events.events:
            console.print(event.line(), markup=False)
    for line in result.verdict_lines():
        console.print(line, markup=False)
    if result.ok and args.dir is None:
        remove_run(directory)
    return 0 if result.ok else 1


# ---------------------------------------------------------------------------------- client commands


@_user_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from bft.client import ClientConfig, ClientError, open_client

    if args.tx:
        payloads = [t.encode() for t in args.tx]
    else:
        payloads = [line.rstrip(b"\r\n") for line in sys.stdin.buffer]
        payloads = [p for p in payloads if p]
    if not payloads:
        raise CliError("nothing to submit: give transactions as arguments or lines on stdin")
    config = ClientConfig.from_cluster(args.dir, sign=args.signed, timeout=args.timeout)

    async def submit() -> list[Any]:
        async with open_client(config) as client:
            return await client.submit_many(payloads)

    results = _run(submit)
    failed = 0
    for payload, result in zip(payloads, results, strict=True):
        if isinstance(result, ClientError):
            failed += 1
            print(f"error: {payload[:40]!r}: {result}", file=sys.stderr)
            continue
        if args.json:
            print(
                json.dumps(
                    {
                        "height": result.height,
                        "position": result.index,
                        "txid": result.txid.hex(),
                        "block_hash": result.header.hash().hex(),
                        "signers": list(result.certificate.signer_ids),
                        "receipt": result.encode().hex(),
                    }
                )
            )
        else:
            print(f"height {result.height} position {result.index} txid {result.txid.hex()}")
    return EXIT_INVALID if failed else 0


@_user_errors
def cmd_tail(args: argparse.Namespace) -> int:
    import trio

    from bft.client import ClientConfig, open_client

    config = ClientConfig.from_cluster(args.dir)
    if args.start < 1:
        raise CliError("--from must be at least 1")

    async def tail() -> None:
        async with open_client(config, wait=1) as client:
            shown = 0
            async for block in client.blocks(args.start):
                if args.json:
                    line = json.dumps(
                        {
                            "height": block.height,
                            "hash": block.hash().hex(),
                            "txs": len(block.txs),
                            "view": block.header.view,
                            "proposer": block.header.proposer,
                            "signers": list(block.certificate.signer_ids),
                        }
                    )
                else:
                    line = (
                        f"height {block.height:>6}  hash {block.hash().hex()[:16]}  "
                        f"txs {len(block.txs):>5}  view {block.header.view:>3}  "
                        f"proposer {block.header.proposer}  "
                        f"signers {','.join(map(str, block.certificate.signer_ids))}"
                    )
                print(line, flush=True)
                shown += 1
                if args.count is not None and shown >= args.count:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(tail)
    return 0


# ---------------------------------------------------------------------------------- parsers


def add_parsers(sub: Any) -> None:
    """Add ``testbed``, ``submit``, ``tail`` and ``status`` to the ``bft`` command's parser."""
    testbed = sub.add_parser(
        "testbed",
        help="run a local cluster of replica processes: init, up, load, fault, status, down, demo",
        description="A local cluster: every replica a process on this machine, on free loopback "
        "ports. See docs/testbed.md.",
    )
    tsub = testbed.add_subparsers(dest="testbed_command", metavar="ACTION", required=True)

    p = tsub.add_parser("init", help="make keys, TLS certificates and configs for a cluster")
    p.add_argument("--protocol", choices=("pbft", "hotstuff", "raft"), default="pbft")
    p.add_argument("-n", type=int, help="replicas (default 4, or 3 for raft)")
    p.add_argument("--dir", required=True, help="new directory for the cluster")
    p.add_argument("--chain-id", default="testbed")
    p.add_argument("--plaintext", action="store_true", help="no TLS (only to measure its cost)")
    p.add_argument(
        "--client-signatures", action="store_true", help="replicas require signed transactions"
    )
    p.add_argument(
        "--hosts",
        help="comma-separated address of each replica's machine, for a cluster deployed on "
        "several machines (default: free loopback ports on this one)",
    )
    p.add_argument("--peer-port", type=int, help="with --hosts: replicas' port (default 7000)")
    p.add_argument("--client-port", type=int, help="with --hosts: clients' port (default 8000)")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics from this port (consecutive ports on one machine)",
    )
    p.set_defaults(func=cmd_init)

    p = tsub.add_parser("up", help="start the replica processes and show them live")
    p.add_argument("--dir", required=True)
    p.add_argument("--detach", action="store_true", help="return once every replica answers")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the replicas")
    p.set_defaults(func=cmd_up)

    p = tsub.add_parser(
        "transfer", help="hand leadership to another replica, for maintenance (raft)"
    )
    p.add_argument("--dir", required=True)
    p.add_argument("--to", type=int, required=True, help="the replica to lead")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for it")
    p.set_defaults(func=cmd_transfer)

    p = tsub.add_parser("down", help="stop the replica processes (SIGTERM, then SIGKILL)")
    p.add_argument("--dir", required=True)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL")
    p.set_defaults(func=cmd_down)

    p = tsub.add_parser("status", help="the cluster at a glance (exit 1 if no replica is healthy)")
    p.add_argument("--dir", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each replica")
    p.set_defaults(func=cmd_status)

    p = tsub.add_parser("load", help="generate load through the client library")
    p.add_argument("--dir", required=True)
    p.add_argument("--count", type=int, default=10_000, help="transactions (default 10000)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, help="open loop: submit this many per second")
    mode.add_argument(
        "--window", type=int, help="closed loop: this many outstanding (the default, 1000)"
    )
    p.add_argument("--size", type=int, default=256, help="payload bytes (default 256)")
    p.add_argument("--signed", action="store_true", help="sign every transaction (Ed25519)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before indeterminate")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_load)

    p = tsub.add_parser(
        "fault", help="inject a fault: kill, restart, pause, resume, links, Byzantine"
    )
    p.add_argument("--dir", default=argparse.SUPPRESS, help="the cluster directory")
    p.add_argument("--timeout", type=float, default=30.0, help="restart: seconds to wait")
    fsub = p.add_subparsers(dest="action", metavar="FAULT", required=True)
    for name, text in (
        ("kill", "kill -9 the replica's process"),
        ("restart", "start the replica's process again (stopping it first if it runs)"),
        ("pause", "stop the process with SIGSTOP"),
        ("resume", "continue a paused process (SIGCONT)"),
    ):
        q = fsub.add_parser(name, help=text)
        q.add_argument("replica", type=int)
    q = fsub.add_parser("partition", help="split the replicas into groups, like 0,1/2,3")
    q.add_argument("groups")
    q = fsub.add_parser("slow", help="delay every message to and from a replica")
    q.add_argument("replica", type=int)
    q.add_argument("--delay", type=float, required=True, metavar="MS")
    q = fsub.add_parser("drop", help="drop messages to and from a replica at random")
    q.add_argument("replica", type=int)
    q.add_argument("--probability", type=float, required=True)
    q = fsub.add_parser("cut", help="SENDER stops sending to RECEIVER (one direction)")
    q.add_argument("sender", type=int)
    q.add_argument("receiver", type=int)
    fsub.add_parser("heal", help="clear every link fault")
    q = fsub.add_parser("byzantine", help="make a replica misbehave (or honest again)")
    q.add_argument("replica", type=int)
    q.add_argument(
        "mode", choices=("silent", "equivocate", "twin", "bad-signatures", "bad-replies", "honest")
    )
    q.add_argument("--force", action="store_true", help="allow more than f Byzantine replicas")
    for q in fsub.choices.values():
        q.add_argument("--dir", default=argparse.SUPPRESS, help="the cluster directory")
    p.set_defaults(func=cmd_fault)

    p = tsub.add_parser(
        "demo",
        help="bring up a testbed, commit a workload, verify every ledger, bring it down",
    )
    p.add_argument("--dir", default="testbed-demo", help="cluster directory (default testbed-demo)")
    p.add_argument("--protocol", choices=("pbft", "hotstuff", "raft"), default=None)
    p.add_argument("-n", type=int, help="replicas for a new cluster (default 4, or 3 for raft)")
    p.add_argument("--count", type=int, default=5000, help="transactions (default 5000)")
    p.add_argument("--size", type=int, default=256, help="payload bytes (default 256)")
    p.add_argument("--window", type=int, default=1000, help="outstanding transactions")
    p.add_argument("--plaintext", action="store_true", help="no TLS (a new cluster only)")
    p.set_defaults(func=cmd_demo)

    p = tsub.add_parser(
        "chaos",
        help="load under a seeded mix of faults, then heal and check the history (a verdict)",
        description="Make a cluster, run load from several clients while kill -9, pauses, "
        "partitions, one-way links, slow and lossy links and (BFT modes) Byzantine replicas come "
        "and go, then heal and check every acknowledged transaction, per-client order and the "
        "ledgers. Exit 0 on PASS, 1 on FAIL. See docs/reliability.md.",
    )
    p.add_argument("--protocol", choices=("pbft", "hotstuff", "raft"), default="pbft")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of faults (default 30)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    p.add_argument("-n", type=int, help="replicas (default 4, or 3 for raft)")
    p.add_argument("--clients", type=int, default=3, help="client identities (default 3)")
    p.add_argument("--window", type=int, default=4, help="in flight per client (default 4)")
    p.add_argument(
        "--faults",
        help="comma-separated fault kinds to draw from (default all): kill, kill-all, pause, "
        "partition, cut, slow, drop, byzantine",
    )
    p.add_argument(
        "--netns", action="store_true", help="each replica in its own network namespace (root)"
    )
    p.add_argument(
        "--dir", help="keep the run's files here (default: a temporary directory, removed on PASS)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print the fault events")
    p.set_defaults(func=cmd_chaos)

    p = sub.add_parser("submit", help="submit transactions (arguments, or lines on stdin)")
    p.add_argument("--dir", required=True, help="the cluster directory")
    p.add_argument("tx", nargs="*", help="transactions (UTF-8); none: read lines from stdin")
    p.add_argument("--signed", action="store_true", help="sign with the cluster's client key")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--json", action="store_true", help="one JSON receipt per line")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("tail", help="follow committed blocks, verified, one line per block")
    p.add_argument("--dir", required=True, help="the cluster directory")
    p.add_argument("--from", dest="start", type=int, default=1, help="first height (default 1)")
    p.add_argument("--count", type=int, help="stop after this many blocks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("status", help="the cluster at a glance: leader, heights, lag, health")
    p.add_argument("--dir", required=True, help="the cluster directory")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each replica")
    p.set_defaults(func=cmd_status)

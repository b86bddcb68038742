"""Cluster benchmark: real replica processes over TLS with fsync'd ledgers, driven by separate
load processes through the client library; PBFT, HotStuff and Raft side by side, with PySyncObj
(and etcd, when installed) as baselines measured in the same run.

Run from a checkout: ``python -m bench.cluster_bench [--quick | --full] [--sections ...]
[--protocols ...] [--out DIR]`` (or ``bft bench``). It writes ``results.json``, ``report.md``
and PNG plots to ``--out`` (default ``bench/results/cluster-<time>/``).

Theory of operation. Every *point* of the matrix (protocol, committee size, transaction size,
client signatures, TLS, batch policy) gets a fresh cluster directory made by
:func:`bft.testbed.layout.init_cluster`, whose replicas run as ``bft replica`` processes. The
point then runs *phases*, each a fresh :mod:`bench.load_worker` process with its own payload tag:

* ``warm``: a short closed-loop run, not reported (connections, the first view or election;
  skipped by ``--quick``);
* ``light``: closed loop with one request outstanding (and no client linger): the latency an
  unloaded cluster gives (p50/p95/p99);
* ``sat``: closed loop with a large window: the throughput the cluster sustains. A closed
  loop commits at most ``window / latency``, so a window too small for a cluster's commit
  latency measures the load, not the cluster: the window starts at the profile's and doubles
  while doubling raised the throughput by ``RAMP_GAIN`` or more (up to ``max_window``); the
  point's figure is the median of ``repeats`` runs at the last window that paid;
* ``open-<rate>``: open-loop runs at fractions of the ``sat`` throughput, latency counted from
  each transaction's due time (no coordinated omission), with as many clients as the ``sat``
  window needed: the throughput-latency curve, and the highest offered rate the cluster keeps
  up with (its saturation point).

Around every phase the benchmark reads CPU time of the replica and load processes from
``/proc/<pid>/stat`` and each replica's verbose status (protocol messages sent, bytes and frames
sent on peer links). After the last phase it reads each replica's peak memory (``VmHWM``), stops
the replicas, verifies every ledger against the committee and checks that they agree, and counts
each phase's transactions *in the ledger* by their tag: the committed throughput is that count
divided by the time to the last acknowledgement, and the count must cover every acknowledged
transaction.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cbor2
import trio

from bft.client import open_client
from bft.testbed.layout import free_ports, init_cluster
from bft.testbed.status import ask_statuses
from bft.testbed.testbed import Testbed
from bft.testbed.verify import verify_cluster
from ledger.store import LedgerStore

from . import _report
from .load_worker import PER_CLIENT_INFLIGHT

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SECTIONS = ("protocols", "scaling", "txsize", "signatures", "tls", "batch", "baselines")
PROTOCOLS = ("pbft", "hotstuff", "raft")


class BenchError(Exception):
    """A run could not be completed; the message says why in one line."""


# --------------------------------------------------------------------------------------------
# What to run


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    warm: float
    light: float
    sat: float
    sweep: float
    fractions: tuple[float, ...]
    window: int
    """The closed loop's first window (requests outstanding)."""
    drain: float
    ns: tuple[int, ...]
    sizes: tuple[int, ...]
    batches: tuple[tuple[int, int], ...]
    """(max_txs, linger_ticks) pairs for the batch section (PBFT)."""
    verify_seconds: float
    pysyncobj_count: int
    pysyncobj_light_count: int
    sections: tuple[str, ...] = SECTIONS
    """The sections run when ``--sections`` is not given."""
    repeats: int = 1
    """Closed-loop phases per point; the point reports the median (a shared machine is noisy)."""
    max_window: int = 0
    """The closed loop's window doubles from ``window`` up to this (see :func:`saturate`);
    0: no ramp."""


PROFILES = {
    "quick": Profile(
        "quick", warm=0.0, light=0.8, sat=1.2, sweep=0.8, fractions=(0.5,), window=300,
        max_window=600,
        drain=5.0, ns=(4,), sizes=(256,), batches=(), verify_seconds=0.1,
        pysyncobj_count=1500, pysyncobj_light_count=20, sections=("protocols", "baselines"),
    ),
    "default": Profile(
        "default", warm=1.0, light=3.0, sat=5.0, sweep=4.0, fractions=(0.25, 0.5, 0.75, 1.0, 1.25),
        window=1000, drain=10.0, ns=(4, 7, 10), sizes=(32, 256, 4096),
        batches=((100, 0), (500, 0), (2000, 0), (500, 1)), verify_seconds=1.0,
        pysyncobj_count=30000, pysyncobj_light_count=300, repeats=3, max_window=8000,
    ),
    "full": Profile(
        "full", warm=2.0, light=8.0, sat=12.0, sweep=8.0,
        fractions=(0.1, 0.25, 0.5, 0.7, 0.85, 1.0, 1.15, 1.3), window=2000, drain=15.0,
        ns=(4, 7, 10, 16), sizes=(32, 256, 1024, 4096),
        batches=((50, 0), (100, 0), (500, 0), (2000, 0), (500, 1), (500, 3)),
        verify_seconds=2.0, pysyncobj_count=100000, pysyncobj_light_count=1000, repeats=3,
        max_window=16000,
    ),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Point:
    """One configuration of the cluster under test."""

    section: str
    protocol: str
    n: int
    size: int = 256
    sign: bool = False
    tls: bool = True
    max_txs: int | None = None
    linger_ticks: int | None = None
    sweep: bool = False

    @property
    def key(self) -> str:
        parts = [self.protocol, f"n{self.n}", f"{self.size}B"]
        parts.append("signed" if self.sign else "unsigned")
        parts.append("tls" if self.tls else "plain")
        if self.max_txs is not None or self.linger_ticks is not None:
            parts.append(f"batch{self.max_txs or 500}-linger{self.linger_ticks or 0}")
        return "-".join(parts)

    def describe(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "key": self.key}


def cft_n(n: int) -> int:
    """Raft's committee tolerating as many faults as a BFT committee of ``n``: 2f+1."""
    return 2 * ((n - 1) // 3) + 1


def plan(profile: Profile, sections: Sequence[str], protocols: Sequence[str]) -> list[Point]:
    """The matrix points to run, without duplicates (a point serves every section it fits)."""
    points: list[Point] = []

    def add(point: Point) -> None:
        # A cluster configuration runs once and serves every section it fits.
        if point.protocol in protocols and not any(same_config(point, p) for p in points):
            points.append(point)

    base = {"pbft": 4, "hotstuff": 4, "raft": 3}
    if "protocols" in sections:
        for proto in PROTOCOLS:
            add(Point("protocols", proto, base[proto], sweep=True))
        if profile.name != "quick":
            add(Point("protocols", "raft", 4))  # equal size
    if "scaling" in sections:
        for n in profile.ns:
            for proto in ("pbft", "hotstuff"):
                add(Point("scaling", proto, n))
            add(Point("scaling", "raft", cft_n(n)))
    if "txsize" in sections:
        for size in profile.sizes:
            for proto in PROTOCOLS:
                add(Point("txsize", proto, base[proto], size=size))
    if "signatures" in sections:
        for proto in PROTOCOLS:
            add(Point("signatures", proto, base[proto]))
            add(Point("signatures", proto, base[proto], sign=True))
    if "tls" in sections:
        for proto in PROTOCOLS:
            add(Point("tls", proto, base[proto]))
            add(Point("tls", proto, base[proto], tls=False))
    if "batch" in sections:
        for max_txs, linger in profile.batches:
            add(Point("batch", "pbft", 4, max_txs=max_txs, linger_ticks=linger))
    return points


def same_config(a: Point, b: Point) -> bool:
    """Whether two points describe the same cluster (whatever section asked for them)."""
    fields = ("protocol", "n", "size", "sign", "tls", "max_txs", "linger_ticks")
    norm = {"max_txs": 500, "linger_ticks": 0}
    for name in fields:
        x, y = getattr(a, name), getattr(b, name)
        if name in norm:
            x, y = x if x is not None else norm[name], y if y is not None else norm[name]
        if x != y:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Processes: CPU, memory, JSON lines


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` so far (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used so far (from ``/proc/stat``)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    return busy / CLOCK_TICKS


def peak_memory_mb(pid: int | None) -> float | None:
    """The peak resident set (``VmHWM``) of ``pid`` in MiB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def read_json_line(proc: subprocess.Popen[str], timeout: float, what: str) -> dict[str, Any]:
    """The next JSON line a child prints, within ``timeout`` seconds."""
    if proc.stdout is None:
        raise BenchError(f"{what}: no pipe to read")
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise BenchError(f"{what}: no answer within {timeout:.0f} s")
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"{what}: exited (status {proc.wait()}) without an answer")
            line = line.strip()
            if line.startswith("{"):
                doc: dict[str, Any] = json.loads(line)
                if "error" in doc:
                    raise BenchError(f"{what}: {doc['error']}")
                return doc


def finish_child(proc: subprocess.Popen[str]) -> None:
    """Close a child's stdin (its cue to exit) and reap it: SIGKILL after 10 s."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------------------------
# One point


@dataclasses.dataclass
class Phase:
    tag: str
    kind: str  # warm, light, sat, open
    window: int | None = None
    rate: float | None = None
    duration: float = 1.0
    clients: int = 1
    """Client objects in the load process (the closed loop adds what its window needs)."""


def _link_totals(statuses: dict[int, dict[str, Any] | None]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for status in statuses.values():
        if not status:
            continue
        stats = status.get("stats", {})
        totals["messages_sent"] += int(stats.get("messages_sent", 0))
        totals["messages_received"] += int(stats.get("messages_received", 0))
        for link in status.get("links", {}).values():
            totals["bytes_sent"] += int(link.get("bytes_sent", 0))
            totals["frames_sent"] += int(link.get("frames_sent", 0))
        client = status.get("client_bytes", {})
        totals["client_bytes"] += int(client.get("in", 0)) + int(client.get("out", 0))
    heights = [int(s["height"]) for s in statuses.values() if s]
    totals["height"] = max(heights) if heights else 0
    return dict(totals)


async def _verbose_statuses(bed: Testbed) -> dict[int, dict[str, Any] | None]:
    async with open_client(bed.client_config(admin=True), wait=0) as client:
        return await ask_statuses(client, bed.n, timeout=2.0, verbose=True)


def write_batch_policy(directory: Path, point: Point, n: int) -> None:
    """Give every replica the point's batch policy (a ``[<protocol>.batch]`` table)."""
    if point.max_txs is None and point.linger_ticks is None:
        return
    lines = ["", f"[{point.protocol}.batch]"]
    if point.max_txs is not None:
        lines.append(f"max_txs = {point.max_txs}")
    if point.linger_ticks is not None:
        lines.append(f"linger_ticks = {point.linger_ticks}")
    for i in range(n):
        path = directory / f"replica-{i}.toml"
        path.write_text(path.read_text("utf-8") + "\n".join(lines) + "\n", "utf-8")


def ledger_tags(directory: Path, chain_id: str, replica: int = 0) -> Counter[str]:
    """Transactions per payload tag in one replica's ledger."""
    counts: Counter[str] = Counter()
    path = directory / "data" / f"replica-{replica}" / "ledger"
    if not path.exists():
        return counts
    with LedgerStore.open(path, chain_id=chain_id, readonly=True) as store:
        for block in store.blocks(1, store.height):
            for tx in block.txs:
                payload = cbor2.loads(tx)[-2]
                counts[payload.split(b"-", 1)[0].decode("ascii", "replace")] += 1
    return counts


class PointRun:
    """Runs the phases of one point against one fresh cluster."""

    def __init__(self, point: Point, profile: Profile, workdir: Path, index: int) -> None:
        self.point = point
        self.profile = profile
        self.directory = workdir / f"{index:02d}-{point.key}"
        self.index = index
        self.bed: Testbed | None = None
        self.results: dict[str, Any] = {"point": point.describe(), "phases": {}}

    def setup(self) -> None:
        p = self.point
        init_cluster(
            self.directory,
            protocol=p.protocol,
            n=p.n,
            chain_id="bench",
            plaintext=not p.tls,
            require_client_signatures=p.sign,
        )
        write_batch_policy(self.directory, p, p.n)
        self.bed = Testbed(self.directory)
        self.bed.start()
        trio.run(self.bed.wait_ready, None, 60.0)

    def tag(self, kind: str) -> str:
        """A phase's payload tag: no ``-`` (the ledger count takes the payload up to one)."""
        return f"p{self.index}{kind}"

    def run_phase(self, phase: Phase) -> dict[str, Any]:
        bed = self._bed()
        p = self.point
        cmd = [
            sys.executable, "-m", "bench.load_worker", "--cluster", str(self.directory),
            "--duration", str(phase.duration), "--drain", str(self.profile.drain),
            "--size", str(p.size), "--tag", f"{phase.tag}-",
        ]  # fmt: skip
        if p.sign:
            cmd.append("--sign")
        if phase.clients > 1:
            cmd += ["--clients", str(phase.clients)]
        if phase.window is not None:
            cmd += ["--window", str(phase.window)]
        else:
            cmd += ["--rate", f"{phase.rate:.1f}"]
        if phase.kind == "light":
            cmd += ["--linger", "0"]
        stderr = self.directory / "data" / f"load-{phase.tag}.log"
        with open(stderr, "wb") as err:
            worker = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                cwd=ROOT, env=child_env(),
            )  # fmt: skip
        try:
            read_json_line(worker, 60.0, f"load worker {phase.tag}")
            pids = [bed.processes.pid(i) for i in range(p.n)]
            before = _link_totals(trio.run(_verbose_statuses, bed))
            replica_cpu0 = [cpu_seconds(pid) for pid in pids]
            loader_cpu0 = cpu_seconds(worker.pid)
            busy0, own0 = machine_busy_seconds(), time.process_time()
            started = time.perf_counter()
            if worker.stdin is None:
                raise BenchError("load worker: no stdin")
            worker.stdin.write("go\n")
            worker.stdin.flush()
            loader_cpu1 = 0.0

            timeout = phase.duration + self.profile.drain + 60.0
            doc = read_json_line(worker, timeout, f"load worker {phase.tag}")
            loader_cpu1 = cpu_seconds(worker.pid)
            wall = time.perf_counter() - started
            replica_cpu1 = [cpu_seconds(pid) for pid in pids]
            busy1, own1 = machine_busy_seconds(), time.process_time()
            after = _link_totals(trio.run(_verbose_statuses, bed))
        finally:
            finish_child(worker)
        result: dict[str, Any] = doc["result"]
        result.update(
            kind=phase.kind,
            window=phase.window,
            offered_rate=phase.rate,
            wall_s=round(wall, 3),
            replica_cpu_s=round(sum(replica_cpu1) - sum(replica_cpu0), 3),
            loader_cpu_s=round(loader_cpu1 - loader_cpu0, 3),
            # CPU the rest of the machine used meanwhile, in cores (other work on a shared host).
            other_cores=round(
                max(
                    0.0,
                    (busy1 - busy0)
                    - (sum(replica_cpu1) - sum(replica_cpu0))
                    - (loader_cpu1 - loader_cpu0)
                    - (own1 - own0),
                )
                / wall,
                2,
            ),
            wire={k: after.get(k, 0) - before.get(k, 0) for k in after},
        )
        self.results["phases"][phase.tag] = result
        return result

    def _bed(self) -> Testbed:
        if self.bed is None:
            raise BenchError("the cluster is not set up")
        return self.bed

    def finish(self) -> None:
        """Peak memory, stop, verify, count each phase's transactions in the ledger."""
        bed = self._bed()
        with contextlib.suppress(Exception):
            trio.run(bed.wait_converged, 15.0)
        self.results["peak_memory_mb"] = [
            peak_memory_mb(bed.processes.pid(i)) for i in range(self.point.n)
        ]
        self.results["stopped"] = bed.stop()
        report = verify_cluster(bed.cluster)
        self.results["verify"] = {
            "ok": report.ok,
            "identical": report.identical,
            "heights": report.heights,
            "problems": report.problems[:5],
        }
        counts = ledger_tags(self.directory, bed.cluster.chain_id)
        for tag, phase in self.results["phases"].items():
            committed = counts.get(tag, 0)
            phase["ledger_committed"] = committed
            phase["ledger_ok"] = phase["acked_total"] <= committed <= phase["submitted"]
            span = phase.get("last_ack_s") or phase["duration"]
            phase["committed_tps"] = round(committed / span, 1) if span else 0.0
            per_k = 1000 / committed if committed else 0.0
            phase["replica_cpu_per_1000"] = round(phase["replica_cpu_s"] * per_k, 4)
            phase["loader_cpu_per_1000"] = round(phase["loader_cpu_s"] * per_k, 4)
            wire = phase["wire"]
            blocks = wire.get("height", 0)
            phase["blocks"] = blocks
            phase["bytes_per_tx"] = (
                round(wire.get("bytes_sent", 0) / committed, 1) if committed else None
            )
            phase["client_bytes_per_tx"] = (
                round(wire.get("client_bytes", 0) / committed, 1) if committed else None
            )
            phase["messages_per_block"] = (
                round(wire.get("messages_sent", 0) / blocks, 2) if blocks else None
            )
            phase["txs_per_block"] = round(committed / blocks, 1) if blocks else None  # fmt: skip

    def close(self) -> None:
        if self.bed is not None:
            self.bed.stop(timeout=5.0)


RAMP_GAIN = 0.10
"""A doubled closed-loop window must raise the throughput by this much to be kept."""


def ramp_windows(profile: Profile) -> list[int]:
    """The closed-loop windows a point may try, in order."""
    windows = [profile.window]
    while windows[-1] * 2 <= profile.max_window:
        windows.append(windows[-1] * 2)
    return windows


def saturate(run: PointRun, profile: Profile, step: Callable[..., None]) -> tuple[int, list[float]]:
    """The closed-loop phases of a point: the window ramp, then the repeats at the window it
    settled on (the ``sat`` window, recorded in the results); that window and the acknowledged
    rate of each run at it."""
    key = run.point.key
    windows = ramp_windows(profile)
    tried: list[tuple[int, float]] = []
    chosen = windows[0]
    for window in windows:
        step(f"{key}: closed loop, window {window:,}")
        sat = run.run_phase(
            Phase(run.tag(f"satw{window}"), "sat", window=window, duration=profile.sat)
        )
        tried.append((window, acked_rate(sat)))
        if len(tried) > 1 and tried[-1][1] < (1 + RAMP_GAIN) * tried[-2][1]:
            break  # the larger window did not pay: the cluster was saturated at the last one
        chosen = window
    step(f"{key}: closed loop settled on window {chosen:,}", skipped=len(windows) - len(tried))
    rates = [rate for window, rate in tried if window == chosen]
    for repeat in range(1, profile.repeats):
        step(f"{key}: closed loop, window {chosen:,} ({repeat + 1})")
        sat = run.run_phase(
            Phase(
                run.tag(f"satw{chosen}r{repeat + 1}"), "sat", window=chosen,
                duration=profile.sat,
            )
        )  # fmt: skip
        rates.append(acked_rate(sat))
    run.results["sat_window"] = chosen
    return chosen, rates


def acked_rate(phase: dict[str, Any]) -> float:
    return float(phase["acked_total"]) / (phase.get("last_ack_s") or phase["duration"])


def run_point(
    point: Point, profile: Profile, workdir: Path, index: int, step: Callable[..., None]
) -> dict[str, Any]:
    """Every phase of ``point``; the results as a JSON-able dict (``error`` set on failure)."""
    run = PointRun(point, profile, workdir, index)
    try:
        step(f"{point.key}: starting {point.n} replicas")
        run.setup()
        step(f"{point.key}: warm-up")
        if profile.warm > 0:
            run.run_phase(Phase(run.tag("warm"), "warm", window=100, duration=profile.warm))
        step(f"{point.key}: light load (window 1)")
        run.run_phase(Phase(run.tag("light"), "light", window=1, duration=profile.light))
        window, rates = saturate(run, profile, step)
        if point.sweep:
            reference = sorted(rates)[len(rates) // 2]
            for fraction in profile.fractions:
                rate = max(10.0, reference * fraction)
                step(f"{point.key}: open loop at {rate:,.0f} tx/s")
                run.run_phase(
                    Phase(
                        run.tag(f"open{round(fraction * 100)}"), "open", rate=rate,
                        duration=profile.sweep, clients=math.ceil(window / PER_CLIENT_INFLIGHT),
                    )
                )  # fmt: skip
        step(f"{point.key}: verifying ledgers")
        run.finish()
    except Exception as exc:  # one failed point is reported; the run goes on
        run.results["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        run.close()
    return summarise(run.results)


def kept_up(phase: dict[str, Any]) -> bool:
    """Whether the cluster kept up with an open-loop phase's offered rate: every transaction due
    was sent and committed, and over the last three quarters of the run transactions committed
    at (95 % of) the offered rate. A cluster that falls behind commits at its own capacity
    while its queue, and the latency of later transactions, grows."""
    if phase["unfinished"] or phase.get("not_sent") or phase["indeterminate"]:
        return False
    if phase.get("ledger_committed", 0) < 0.99 * phase["submitted"]:
        return False
    steady = phase.get("steady_tps")
    return steady is not None and steady >= 0.95 * phase["offered_rate"]


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The point's headline figures, beside its phases."""
    phases = results["phases"]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for phase in phases.values():
        by_kind.setdefault(phase["kind"], []).append(phase)
    summary: dict[str, Any] = {}
    if "light" in by_kind:
        light = by_kind["light"][0]
        summary["light_latency_ms"] = {k: light["latency_ms"][k] for k in ("p50", "p95", "p99")}
        summary["light_tps"] = light.get("committed_tps")
    window = results.get("sat_window")
    sat_runs = [ph for ph in by_kind.get("sat", []) if window is None or ph["window"] == window]
    if sat_runs:
        runs = sorted(sat_runs, key=lambda ph: ph.get("committed_tps") or 0.0)
        sat = runs[len(runs) // 2]  # the median run, with its own CPU, bytes and latency
        summary["sat_runs_tps"] = [ph.get("committed_tps") for ph in runs]
        for key in (
            "committed_tps", "replica_cpu_per_1000", "loader_cpu_per_1000", "bytes_per_tx",
            "client_bytes_per_tx",
            "messages_per_block", "txs_per_block",
        ):  # fmt: skip
            summary[key] = sat.get(key)
        summary["sat_latency_ms"] = {k: sat["latency_ms"][k] for k in ("p50", "p95", "p99")}
        summary["sat_window"] = sat["window"]
        # Each window the ramp tried, with its first run's committed throughput (ledger count).
        first_at: dict[int, float | None] = {}
        for ph in by_kind.get("sat", []):
            first_at.setdefault(ph["window"], ph.get("committed_tps"))
        summary["window_ramp"] = [[w, tps] for w, tps in first_at.items()]
    curve = []
    for phase in sorted(by_kind.get("open", []), key=lambda ph: ph["offered_rate"]):
        first, second = phase.get("p50_halves_ms") or (None, None)
        curve.append(
            {
                "offered": round(phase["offered_rate"], 1),
                "committed_tps": phase.get("committed_tps"),
                "steady_tps": phase.get("steady_tps"),
                "p50": phase["latency_ms"]["p50"],
                "p99": phase["latency_ms"]["p99"],
                "p50_halves": [first, second],
                "kept_up": kept_up(phase),
            }
        )
    if curve:
        summary["curve"] = curve
        kept = [c["offered"] for c in curve if c["kept_up"]]
        summary["saturation_offered_tps"] = max(kept) if kept else None
    others = [ph.get("other_cores", 0.0) for ph in phases.values()]
    summary["other_cores"] = round(max(others), 2) if others else None
    mem = [m for m in results.get("peak_memory_mb", []) if m is not None]
    summary["peak_memory_mb"] = round(max(mem), 1) if mem else None
    checks = [ph.get("ledger_ok", False) for ph in phases.values()]
    summary["ledger_ok"] = bool(checks) and all(checks) and results.get("verify", {}).get("ok")
    results["summary"] = summary
    return results


# --------------------------------------------------------------------------------------------
# Baselines and the crypto reference


def ed25519_verify_rate(seconds: float) -> dict[str, float]:
    """Signed-transaction verifications per second on one core, measured now."""
    from crypto import SigningKey
    from ledger.tx import Transaction

    key = SigningKey.generate()
    txs = [Transaction.signed(key, "bench", i, b"x" * 256) for i in range(256)]
    count, started = 0, time.perf_counter()
    while True:
        for tx in txs:
            if not tx.verify_signature("bench"):
                raise BenchError("a valid signature did not verify")
        count += len(txs)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    sign_started = time.perf_counter()
    for i in range(256):
        Transaction.signed(key, "bench", i, b"x" * 256)
    sign_s = (time.perf_counter() - sign_started) / 256
    return {"verify_per_s": round(count / elapsed, 1), "sign_us": round(sign_s * 1e6, 2)}


SPEED_PROBE_S = 0.3
"""Seconds of Ed25519 verification measured before each point (the machine's speed then)."""


def fsync_latency(directory: Path, count: int = 200) -> dict[str, float]:
    """Milliseconds to fsync a 4 KiB append in ``directory`` (p50, p99), measured now: the
    floor under every commit, since a replica fsyncs its votes and its ledger."""
    path = directory / "fsync-probe"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {
        "p50_ms": round(times[len(times) // 2] * 1e3, 3),
        "p99_ms": round(times[min(len(times) - 1, len(times) * 99 // 100)] * 1e3, 3),
    }


def load_average() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def run_pysyncobj(
    count: int,
    light_count: int,
    size: int,
    window: int,
    workdir: Path,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """Three PySyncObj nodes on loopback: a closed-loop throughput run of ``count`` commands
    and a window-1 latency run of ``light_count`` commands on the leader."""
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return {"skipped": "pysyncobj is not installed (pip install -e '.[bench]')"}
    out: dict[str, Any] = {"count": count, "size": size, "window": window}
    runs = (("throughput", "all", count, window), ("light", "leader", light_count, 1))
    for name, role, total, win in runs:
        step(f"PySyncObj: {name}")
        ports = free_ports(3)
        addrs = [f"127.0.0.1:{port}" for port in ports]
        nodes: list[subprocess.Popen[str]] = []
        per_node = total // 3 if role == "all" else total
        node_window = max(1, win // 3 if role == "all" else win)
        try:
            for i, addr in enumerate(addrs):
                cmd = [
                    sys.executable, "-m", "bench.pysyncobj_node", "--self", addr,
                    *(x for a in addrs if a != addr for x in ("--partner", a)),
                    "--count", str(per_node), "--window", str(node_window),
                    "--size", str(size), "--role", role,
                    "--expect", str(per_node * 3 if role == "all" else per_node),
                ]  # fmt: skip
                err = open(workdir / f"pysyncobj-{name}-{i}.log", "wb")  # noqa: SIM115
                nodes.append(
                    subprocess.Popen(
                        cmd,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        cwd=workdir,
                        env=child_env(),
                    )
                )
                err.close()
            readies = [read_json_line(node, 40.0, "pysyncobj node") for node in nodes]
            cpu0 = [cpu_seconds(node.pid) for node in nodes]
            for node in nodes:
                if node.stdin is not None:
                    node.stdin.write("go\n")
                    node.stdin.flush()
            results = [read_json_line(node, 300.0, "pysyncobj node")["result"] for node in nodes]
            cpu1 = [cpu_seconds(node.pid) for node in nodes]
        except BenchError as exc:
            out[name] = {"error": str(exc)}
            continue
        finally:
            for node in nodes:
                with contextlib.suppress(OSError):
                    if node.stdin is not None:
                        node.stdin.write("bye\n")
                        node.stdin.close()
            for node in nodes:
                try:
                    node.wait(10)
                except subprocess.TimeoutExpired:
                    node.kill()
                    node.wait()
        submitted = sum(r["submitted"] for r in results)
        succeeded = sum(r["succeeded"] for r in results)
        elapsed = max(r["elapsed"] for r in results if r["submitted"]) if submitted else 0.0
        leader = next((r for r in results if r["leader"]), results[0])
        out[name] = {
            "leaders": sum(1 for r in readies if r.get("leader")),
            "submitted": submitted,
            "succeeded": succeeded,
            "applied": [r["applied"] for r in results],
            "elapsed_s": elapsed,
            "tps": round(succeeded / elapsed, 1) if elapsed else 0.0,
            "cpu_per_1000": round((sum(cpu1) - sum(cpu0)) * 1000 / succeeded, 4)
            if succeeded
            else None,
            "latency_ms": leader["latency_ms"] if role == "leader" else results[0]["latency_ms"],
        }
    return out


ETCD_THREADS = 128
"""Outstanding puts at most in the etcd throughput run (one loader thread each)."""


def _etcd_call(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(url + path, data=data, timeout=2.0) as response:
        return json.loads(response.read())


def _etcd_leader(urls: list[str], timeout: float) -> str:
    """The client URL of the member that leads, once every member is healthy."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if all(_etcd_call(u, "/health").get("health") == "true" for u in urls):
                status = {u: _etcd_call(u, "/v3/maintenance/status", {}) for u in urls}
                for url, st in status.items():
                    if st.get("leader") and st["leader"] == st.get("header", {}).get("member_id"):
                        return url
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BenchError(f"etcd: no healthy cluster with a leader after {timeout:.0f} s {last}")


def run_etcd(
    count: int,
    light_count: int,
    size: int,
    window: int,
    workdir: Path,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """Three etcd members on loopback (their WAL fsync'd, as etcd always does; no TLS), driven
    through the v3 JSON gateway by a separate load process (``bench.etcd_load``): a closed-loop
    throughput run of ``count`` puts and a window-1 latency run of ``light_count`` puts on the
    leader."""
    etcd = shutil.which("etcd")
    if etcd is None:
        return {"skipped": "etcd not installed (etcd not on PATH; Debian: etcd-server)"}
    version = subprocess.run(
        [etcd, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    threads = max(1, min(window, ETCD_THREADS))
    first = version[0] if version else "etcd ?"
    out: dict[str, Any] = {
        "version": "etcd " + first.split(":", 1)[1].strip() if ":" in first else first,
        "count": count,
        "size": size,
        "window": threads,
    }
    step("etcd: starting 3 members")
    ports = free_ports(6)
    clients = [f"http://127.0.0.1:{p}" for p in ports[:3]]
    peers = [f"http://127.0.0.1:{p}" for p in ports[3:]]
    initial = ",".join(f"m{i}={peer}" for i, peer in enumerate(peers))
    members: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(3):
            cmd = [
                etcd, "--name", f"m{i}", "--data-dir", str(workdir / f"etcd-{i}"),
                "--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
                "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "bench", "--log-level", "warn",
            ]  # fmt: skip
            log = open(workdir / f"etcd-{i}.log", "wb")  # noqa: SIM115
            members.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir))
            log.close()
        leader = _etcd_leader(clients, 30.0)
        runs = (("throughput", count, threads, clients), ("light", light_count, 1, [leader]))
        for name, total, win, endpoints in runs:
            step(f"etcd: {name}")
            cpu0 = [cpu_seconds(m.pid) for m in members]
            cmd = [
                sys.executable, "-m", "bench.etcd_load", "--count", str(total),
                "--window", str(win), "--size", str(size),
                *(x for e in endpoints for x in ("--endpoint", e)),
            ]  # fmt: skip
            loader = subprocess.run(
                cmd, capture_output=True, text=True, env=child_env(), timeout=600, check=False
            )
            cpu1 = [cpu_seconds(m.pid) for m in members]
            try:
                result = json.loads(loader.stdout.strip().splitlines()[-1])["result"]
            except (IndexError, ValueError, KeyError):
                out[name] = {"error": f"etcd load process: {loader.stderr.strip()[-300:]}"}
                continue
            done = result["succeeded"]
            out[name] = {
                "succeeded": done,
                "failures": result["failures"],
                "first_failures": result["first_failures"],
                "elapsed_s": result["elapsed"],
                "tps": round(done / result["elapsed"], 1) if result["elapsed"] else 0.0,
                "cpu_per_1000": round((sum(cpu1) - sum(cpu0)) * 1000 / done, 4) if done else None,
                "loader_cpu_per_1000": round(result["cpu_s"] * 1000 / done, 4) if done else None,
                "latency_ms": result["latency_ms"],
            }
    except (BenchError, OSError, subprocess.TimeoutExpired) as exc:
        out["error"] = str(exc)
    finally:
        for member in members:
            member.terminate()
        for member in members:
            try:
                member.wait(10)
            except subprocess.TimeoutExpired:
                member.kill()
                member.wait()
    return out


# --------------------------------------------------------------------------------------------
# The run


def source_revision() -> dict[str, Any]:
    """The commit of the checkout measured, and whether its working tree differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "modified": None}
    return {"commit": commit, "modified": bool(status.strip())}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="seconds per protocol (CI smoke)")
    size.add_argument("--full", action="store_true", help="longer runs, n up to 16")
    p.add_argument(
        "--sections",
        help=f"comma-separated subset of {','.join(SECTIONS)} "
        "(default: all; with --quick: protocols,baselines)",
    )
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help="subset of pbft,hotstuff,raft")
    p.add_argument("--out", metavar="DIR", help="where results.json, report.md and plots go")
    p.add_argument("--workdir", metavar="DIR", help="cluster directories (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the cluster directories")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .cluster_report import write_outputs

    args = parser().parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full" if args.full else "default"]
    chosen = args.sections if args.sections is not None else ",".join(profile.sections)
    sections = [s.strip() for s in chosen.split(",") if s.strip()]
    protocols = [s.strip() for s in args.protocols.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS] + [
        p for p in protocols if p not in PROTOCOLS
    ]
    if unknown:
        print(f"unknown section or protocol: {', '.join(unknown)}", file=sys.stderr)
        return 2
    out = Path(args.out or ROOT / "bench" / "results" / time.strftime("cluster-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    points = plan(profile, sections, protocols)
    console = _report.console()
    console.print(f"[bold]Cluster benchmark[/bold] - profile {profile.name}, {len(points)} points")
    console.print(f"machine: {_report.machine_line()}", soft_wrap=True)

    interrupted: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    tmp = tempfile.mkdtemp(prefix="bft-cluster-bench-", dir=args.workdir)
    workdir = Path(tmp)
    doc: dict[str, Any] = {
        "benchmark": "cluster",
        "profile": dataclasses.asdict(profile),
        "quick": profile.name == "quick",
        "machine": _report.machine(),
        "versions": {
            name: _report.package_version(name)
            for name in ("trio", "PyNaCl", "cbor2", "pysyncobj", "matplotlib")
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "source": source_revision(),
        "points": [],
    }
    phases_per_point = 4 + len(ramp_windows(profile)) + profile.repeats
    total = sum(phases_per_point + (len(profile.fractions) if pt.sweep else 0) for pt in points)
    total += 3 if "baselines" in sections else 0
    started = time.perf_counter()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=not sys.stdout.isatty(),
        ) as progress:
            task = progress.add_task("starting", total=total)

            def step(text: str, skipped: int = 0) -> None:
                """Show ``text``; one step done, and ``skipped`` planned steps not needed."""
                # A Ctrl-C (or SIGTERM) may land inside a library that turns it into an error;
                # the flag makes the run stop at the next step all the same, through the
                # clean-up that stops this run's replicas.
                if interrupted:
                    raise KeyboardInterrupt
                progress.update(task, description=text, advance=1 + skipped)

            step("measuring Ed25519 verification and fsync")
            doc["load_average_start"] = load_average()
            doc["ed25519"] = ed25519_verify_rate(profile.verify_seconds)
            doc["fsync"] = fsync_latency(workdir, 50 if profile.name == "quick" else 300)
            for index, point in enumerate(points):
                # The machine's speed before each point: a shared host's CPU can slow by a
                # third within minutes, and a point run then is not comparable to the others.
                speed = ed25519_verify_rate(SPEED_PROBE_S)["verify_per_s"]
                result = run_point(point, profile, workdir, index, step)
                result["ed25519_before"] = speed
                doc["points"].append(result)
                summary = result.get("summary", {})
                light = summary.get("light_latency_ms", {})
                line = (
                    f"{point.key}: {summary.get('committed_tps') or 0:,.0f} tx/s, "
                    f"light p50 {light.get('p50')} ms"
                )
                if "error" in result:
                    line += f"  [red]{result['error']}[/red]"
                progress.console.print(line)
            if "baselines" in sections:
                raft = next(
                    (
                        r for r in doc["points"]
                        if r["point"]["protocol"] == "raft" and r["point"]["n"] == 3
                        and r["point"]["size"] == 256 and r.get("summary", {}).get("committed_tps")
                    ),
                    None,
                )  # fmt: skip
                count, window = profile.pysyncobj_count, profile.window
                if raft is not None:
                    # The same window as the Raft run it is compared with, and at least as
                    # many commands as one of its closed-loop phases committed.
                    window = raft.get("sat_window", window)
                    count = max(
                        [count]
                        + [
                            p["ledger_committed"] for p in raft["phases"].values()
                            if p["kind"] == "sat" and p.get("window") == window
                        ]
                    )  # fmt: skip
                doc["baselines"] = {
                    "pysyncobj": run_pysyncobj(
                        count, profile.pysyncobj_light_count, 256, window, workdir, step
                    ),
                    "etcd": run_etcd(
                        count, profile.pysyncobj_light_count, 256, window, workdir, step
                    ),
                }
                step("baselines done")
    except KeyboardInterrupt:
        console.print("[red]interrupted: the replicas of this run are stopped[/red]")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            console.print(f"cluster directories kept in {workdir}")
    doc["elapsed_s"] = round(time.perf_counter() - started, 1)
    doc["load_average_end"] = load_average()
    doc["ed25519_end"] = ed25519_verify_rate(profile.verify_seconds)
    written = write_outputs(doc, out, plots=not args.no_plots)
    for path in written:
        console.print(f"wrote {path}")
    failed = [r["point"]["key"] for r in doc["points"] if "error" in r]
    if failed:
        console.print(f"[red]points that failed: {', '.join(failed)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The cluster benchmark's outputs: ``results.json``, ``report.md`` and PNG plots.

Everything here is computed from the results document :mod:`bench.cluster_bench` builds, so a
report can be rebuilt from a saved ``results.json``:
``python -m bench.cluster_report results.json [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
Result = dict[str, Any]

DEFAULTS = {"size": 256, "sign": False, "tls": True, "max_txs": None, "linger_ticks": None}
BFT = ("pbft", "hotstuff")


# --------------------------------------------------------------------------------------------
# Looking results up


def find(doc: Doc, protocol: str, n: int, **config: Any) -> Result | None:
    """The successful result of the point with this configuration (defaults elsewhere)."""
    wanted = {**DEFAULTS, **config}
    norm = {"max_txs": 500, "linger_ticks": 0}
    for result in doc.get("points", []):
        point = result["point"]
        if point["protocol"] != protocol or point["n"] != n or "error" in result:
            continue
        ok = True
        for key, value in wanted.items():
            mine = point.get(key)
            if key in norm:
                mine = norm[key] if mine is None else mine
                value = norm[key] if value is None else value
            if mine != value:
                ok = False
                break
        if ok:
            return result
    return None


def tps(result: Result | None) -> float | None:
    return None if result is None else result.get("summary", {}).get("committed_tps")


def cpu_ceiling(doc: Doc, result: Result | None) -> float | None:
    """Transactions per second the machine's cores could carry at the CPU cost per transaction
    measured (replicas + load process): ``cores / CPU seconds per tx``. It assumes the run is
    CPU-bound and ignores waiting (fsync, timers); it moves far less than the throughput when
    other work shares the machine, because it counts only the CPU our processes got."""
    if result is None:
        return None
    s = result.get("summary", {})
    per_1000 = (s.get("replica_cpu_per_1000") or 0.0) + (s.get("loader_cpu_per_1000") or 0.0)
    if per_1000 <= 0:
        return None
    return float(doc["machine"]["cores"]) * 1000 / per_1000


def light(result: Result | None, key: str = "p50") -> float | None:
    if result is None:
        return None
    return result.get("summary", {}).get("light_latency_ms", {}).get(key)


def base_n(protocol: str) -> int:
    return 3 if protocol == "raft" else 4


def protocols_in(doc: Doc) -> list[str]:
    seen = {r["point"]["protocol"] for r in doc.get("points", [])}
    return [p for p in ("pbft", "hotstuff", "raft") if p in seen]


def fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"


def spread(values: Sequence[float | None] | None) -> str:
    """``"4,980-5,310"``: the lowest and highest of repeated runs."""
    runs = [v for v in values or () if v is not None]
    if len(runs) < 2:
        return "-"
    return f"{min(runs):,.0f}-{max(runs):,.0f}"


SLOW_POINT = 0.15
"""A point whose Ed25519 rate before it was this far below the run's start ran slow."""


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return a / b


def table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("| " + " | ".join("---" if i == 0 else "---:" for i in range(len(columns))) + " |")
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return lines


def verify_limit(doc: Doc, n: int) -> float | None:
    """Transactions per second Ed25519 verification allows when each of ``n`` replicas checks
    every client signature once, on all cores of this machine."""
    rate = doc.get("ed25519", {}).get("verify_per_s")
    if not rate:
        return None
    return float(rate) * doc["machine"]["cores"] / n


# --------------------------------------------------------------------------------------------
# Plots


def plot_all(doc: Doc, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    protocols = protocols_in(doc)
    # Throughput-latency per protocol.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for proto in protocols:
        result = find(doc, proto, base_n(proto))
        curve = (result or {}).get("summary", {}).get("curve", [])
        if not curve:
            continue
        xs = [c.get("steady_tps") or c["committed_tps"] for c in curve]
        line = ax.plot(xs, [c["p50"] for c in curve], marker="o", label=f"{proto} p50")[0]
        ax.plot(
            xs, [c["p99"] for c in curve], ls="--", color=line.get_color(), label=f"{proto} p99"
        )
    ax.set_xlabel("committed tx/s (open loop, last 3/4 of each run)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Throughput vs latency (256-B tx, TLS, f=1)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    save(fig, "throughput_latency.png")

    # Scaling with n.
    ns = sorted({r["point"]["n"] for r in doc["points"] if r["point"]["protocol"] in BFT})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for proto in BFT:
        ys = [tps(find(doc, proto, n)) for n in ns]
        pts = [(n, y) for n, y in zip(ns, ys, strict=True) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=proto)
    raft_pts = [(n, tps(find(doc, "raft", 2 * ((n - 1) // 3) + 1))) for n in ns]
    raft_pts = [(n, y) for n, y in raft_pts if y is not None]
    if raft_pts:
        ax.plot(*zip(*raft_pts, strict=True), marker="s", ls=":", label="raft (2f+1, same f)")
    ax.set_xlabel("BFT committee size n")
    ax.set_ylabel("committed tx/s (closed loop)")
    ax.set_title("Scaling with committee size")
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    save(fig, "scaling.png")

    def bars(
        name: str,
        title: str,
        groups: list[str],
        series: dict[str, list[float | None]],
        ylabel: str,
        hline: tuple[float, str] | None = None,
    ) -> None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        width = 0.8 / max(1, len(series))
        for i, (label, values) in enumerate(series.items()):
            xs = [g + i * width for g in range(len(groups))]
            ax.bar(xs, [v or 0 for v in values], width, label=label)
        ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
        if hline is not None:
            ax.axhline(hline[0], color="red", ls="--", lw=1, label=hline[1])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, name)

    # BFT/CFT ratio.
    raft3, raft4 = tps(find(doc, "raft", 3)), tps(find(doc, "raft", 4))
    groups = [p for p in BFT if p in protocols]
    if groups and (raft3 or raft4):
        bars(
            "bft_cft_ratio.png",
            "BFT / Raft throughput ratio",
            groups,
            {
                "vs raft n=3 (same f)": [ratio(tps(find(doc, p, 4)), raft3) for p in groups],
                "vs raft n=4 (same n)": [ratio(tps(find(doc, p, 4)), raft4) for p in groups],
            },
            "ratio",
            (1.0, "parity"),
        )
    # TLS cost.
    bars(
        "tls_cost.png",
        "TLS cost: committed tx/s",
        protocols,
        {
            "TLS": [tps(find(doc, p, base_n(p))) for p in protocols],
            "plaintext": [tps(find(doc, p, base_n(p), tls=False)) for p in protocols],
        },
        "committed tx/s",
    )
    # Client signatures, against the Ed25519 verification limit at n=4.
    limit = verify_limit(doc, 4)
    bars(
        "signature_cost.png",
        "Client signatures: committed tx/s",
        protocols,
        {
            "unsigned": [tps(find(doc, p, base_n(p))) for p in protocols],
            "signed": [tps(find(doc, p, base_n(p), sign=True)) for p in protocols],
        },
        "committed tx/s",
        (limit, "Ed25519 verify limit, n=4") if limit else None,
    )
    # Transaction size.
    sizes = sorted({r["point"]["size"] for r in doc["points"]})
    if len(sizes) > 1:
        bars(
            "tx_size.png",
            "Transaction size: committed tx/s",
            [f"{s} B" for s in sizes],
            {p: [tps(find(doc, p, base_n(p), size=s)) for s in sizes] for p in protocols},
            "committed tx/s",
        )
    return written


# --------------------------------------------------------------------------------------------
# Markdown


def render_markdown(doc: Doc, image_prefix: str = "", images: Sequence[str] = ()) -> str:
    """The report as Markdown; images are linked as ``image_prefix + name``."""
    m = doc["machine"]
    lines: list[str] = []
    add = lines.append
    protocols = protocols_in(doc)
    profile = doc["profile"]
    elapsed = doc.get("elapsed_s", 0)
    add(f"Profile **{profile['name']}**, run {doc.get('started', '?')}, took {elapsed:.0f} s.")
    add("")
    add(f"- machine: {m['cpu']}, **{m['cores']} cores**, {m['os']}")
    fsync, ed = doc.get("fsync"), doc.get("ed25519")
    if fsync and ed:
        add(
            f"- measured in this run: fsync of a 4 KiB append p50 {fsync['p50_ms']:.2f} ms, "
            f"p99 {fsync['p99_ms']:.2f} ms; Ed25519 {ed['verify_per_s']:,.0f} verifications/s "
            f"on one core, {ed['sign_us']:.1f} us per signature"
        )
    end = doc.get("ed25519_end")
    if ed and end:
        add(
            f"- Ed25519 verifications/s at the end {end['verify_per_s']:,.0f}, and before each "
            f"point (*Checks*: a point more than {SLOW_POINT * 100:.0f} % below the start is "
            "marked *slow*, its figures moved by the machine, not the code)"
        )
    loads = [doc.get("load_average_start"), doc.get("load_average_end")]
    if all(loads):
        add(f"- load average (1 min) {loads[0][0]:.1f} at the start, {loads[1][0]:.1f} at the end")
    source = doc.get("source")
    if source:
        modified = " with local modifications" if source.get("modified") else ""
        add(f"- source: commit {source.get('commit')}{modified}")
    add(
        f"- Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in {**m["packages"], **doc.get("versions", {})}.items())
    )
    add(
        f"- phases per point: warm-up {profile['warm']} s, light load (window 1, client linger 0) "
        f"{profile['light']} s, closed loop for {profile['sat']} s at a window from "
        f"{profile['window']} doubling while that raised the throughput by 10 % or more "
        f"(up to {profile.get('max_window') or profile['window']}); "
        f"open-loop sweep at {', '.join(f'{f:g}' for f in profile['fractions'])} x the closed-loop "
        f"rate, {profile['sweep']} s each"
    )
    others = [
        r["summary"]["other_cores"]
        for r in doc.get("points", [])
        if r.get("summary", {}).get("other_cores") is not None
    ]
    busy = (
        f"; other work on the machine used up to {max(others):.2f} of the {m['cores']} cores "
        f"during a phase (median {sorted(others)[len(others) // 2]:.2f})"
        if others
        else ""
    )
    add("- every replica, the load generator and the baselines share the same cores" + busy)
    add("")

    # Headline.
    add("## Headline: equal fault tolerance (f = 1), 256-B transactions, TLS, fsync")
    add("")
    rows = []
    for proto in protocols:
        for n in sorted(
            {r["point"]["n"] for r in doc["points"] if r["point"]["protocol"] == proto}
        ):
            r = find(doc, proto, n)
            if r is None or (n != base_n(proto) and not (proto == "raft" and n == 4)):
                continue
            s = r["summary"]
            lat = s.get("light_latency_ms", {})
            rows.append(
                [
                    proto,
                    n,
                    fmt(s.get("committed_tps")),
                    spread(s.get("sat_runs_tps")),
                    fmt(s.get("sat_window")),
                    fmt(cpu_ceiling(doc, r)),
                    fmt(lat.get("p50"), ".2f"),
                    fmt(lat.get("p95"), ".2f"),
                    fmt(lat.get("p99"), ".2f"),
                    fmt(s.get("sat_latency_ms", {}).get("p50"), ".0f"),
                    fmt(s.get("saturation_offered_tps")),
                    fmt(s.get("replica_cpu_per_1000"), ".3f"),
                    fmt(s.get("loader_cpu_per_1000"), ".3f"),
                    fmt(s.get("bytes_per_tx"), ",.0f"),
                    fmt(s.get("client_bytes_per_tx"), ",.0f"),
                    fmt(s.get("messages_per_block"), ".1f"),
                    fmt(s.get("txs_per_block"), ".0f"),
                    fmt(s.get("peak_memory_mb"), ".0f"),
                    fmt(s.get("other_cores"), ".2f"),
                    "yes" if s.get("ledger_ok") else "**NO**",
                ]
            )
    lines += table(
        [
            "protocol",
            "n",
            "committed tx/s",
            "runs (min-max)",
            "window",
            "CPU ceiling tx/s",
            "light p50 ms",
            "p95",
            "p99",
            "loaded p50 ms",
            "open loop kept up to tx/s",
            "replica CPU s/1k tx",
            "loader CPU s/1k tx",
            "peer bytes/tx",
            "client bytes/tx",
            "msgs/block",
            "tx/block",
            "peak RSS MiB",
            "other load (cores)",
            "ledger = acks",
        ],
        rows,
    )
    add("")
    add(
        "*committed tx/s*: transactions of the closed-loop phase found in the ledger, divided by "
        "the time to the last acknowledgement; the median of the repeated closed-loop runs "
        "(*runs*), whose other figures (CPU, bytes, messages) are shown. *window*: requests "
        "outstanding in those runs, where doubling it last raised the throughput by 10 % or more "
        "(a closed loop commits at most window / latency). *CPU ceiling*: the "
        "cores of this machine divided by the CPU seconds per transaction (replicas + load "
        "process), what the run would reach CPU-bound with the machine to itself. *light*: one "
        "request outstanding. *loaded p50*: "
        "commit latency at that window (about window / throughput). *CPU*: user+system "
        "seconds of all replica processes, and of the load process, per 1,000 committed "
        "transactions (from /proc). *peer bytes/tx*: bytes all replicas sent to each other "
        "(client traffic excluded). *client bytes/tx*: bytes between the replicas and their "
        "clients, both ways (in PBFT and Raft the leader receives each transaction and "
        "answers for each block; in HotStuff the f+1 (at least three) leaders of the next "
        "views receive each transaction and answer for it). *msgs/block*: protocol "
        "messages all replicas sent per committed block. *peak RSS*: the largest replica's "
        "VmHWM. *other load*: CPU the rest of the machine used during the busiest phase, in "
        "cores. *ledger = acks*: every "
        "phase's ledger count covers every acknowledged transaction and no more than were "
        "submitted, and every ledger verifies and agrees."
    )
    add("")

    # Curves.
    curves = [(p, find(doc, p, base_n(p))) for p in protocols]
    curves = [(p, r) for p, r in curves if r and r["summary"].get("curve")]
    if curves:
        add("## Throughput vs latency (open loop)")
        add("")
        rows = []
        for proto, r in curves:
            for c in r["summary"]["curve"]:
                rows.append(
                    [
                        f"{proto} n={r['point']['n']}",
                        fmt(c["offered"]),
                        fmt(c.get("steady_tps")),
                        fmt(c["committed_tps"]),
                        fmt(c["p50"], ".1f"),
                        fmt(c["p99"], ".1f"),
                        " / ".join(fmt(v, ".0f") for v in c.get("p50_halves") or (None, None)),
                        "yes" if c["kept_up"] else "no",
                    ]
                )
        lines += table(
            [
                "cluster",
                "offered tx/s",
                "steady tx/s",
                "ledger tx/s",
                "p50 ms",
                "p99 ms",
                "p50 1st / 2nd half",
                "kept up",
            ],
            rows,
        )
        add("")
        add(
            "Latency is counted from each transaction's due time, so queueing shows once the "
            "offered rate passes what the cluster sustains. *Steady*: acknowledgements in the "
            "last three quarters of the run per second; *ledger*: the phase's transactions in "
            "the ledger / time to the last acknowledgement (lower by the latency of the last "
            "ones). *Kept up*: every submitted transaction committed and the steady rate reached "
            "95 % of the offered rate."
        )
        add("")
        if "throughput_latency.png" in images:
            add(f"![throughput vs latency]({image_prefix}throughput_latency.png)")
            add("")

    # Scaling.
    ns = sorted({r["point"]["n"] for r in doc["points"] if r["point"]["protocol"] in BFT})
    if len(ns) > 1:
        add("## Scaling with committee size")
        add("")
        rows = []
        for n in ns:
            raft_n = 2 * ((n - 1) // 3) + 1
            p, h, rf = find(doc, "pbft", n), find(doc, "hotstuff", n), find(doc, "raft", raft_n)
            rows.append(
                [
                    n,
                    (n - 1) // 3,
                    fmt(tps(p)),
                    fmt(cpu_ceiling(doc, p)),
                    fmt(light(p), ".1f"),
                    fmt(tps(h)),
                    fmt(cpu_ceiling(doc, h)),
                    fmt(light(h), ".1f"),
                    f"{raft_n}: {fmt(tps(rf))}",
                    fmt(light(rf), ".1f"),
                ]
            )
        lines += table(
            [
                "n",
                "f",
                "pbft tx/s",
                "pbft CPU ceiling",
                "pbft p50 ms",
                "hotstuff tx/s",
                "hotstuff CPU ceiling",
                "hotstuff p50 ms",
                "raft 2f+1: tx/s",
                "raft p50 ms",
            ],
            rows,
        )
        add("")
        for proto in BFT:
            first, last = tps(find(doc, proto, ns[0])), tps(find(doc, proto, ns[-1]))
            if first and last:
                add(f"- {proto}: n={ns[-1]} keeps {last / first:.1%} of its n={ns[0]} throughput.")
        add("")
        if "scaling.png" in images:
            add(f"![scaling]({image_prefix}scaling.png)")
            add("")

    # BFT / CFT.
    raft3, raft4 = find(doc, "raft", 3), find(doc, "raft", 4)
    if raft3 and any(find(doc, p, 4) for p in BFT):
        add("## BFT against CFT")
        add("")
        rows = []
        for proto in BFT:
            r = find(doc, proto, 4)
            if r is None:
                continue
            rows.append(
                [
                    proto,
                    fmt(tps(r)),
                    fmt(ratio(tps(r), tps(raft3)), ".2f", "x"),
                    fmt(ratio(tps(r), tps(raft4)), ".2f", "x"),
                    fmt(ratio(light(r), light(raft3)), ".2f", "x"),
                ]
            )
        lines += table(
            [
                "BFT n=4",
                "tx/s",
                "vs raft n=3 (same f)",
                "vs raft n=4 (same n)",
                "light p50 vs raft n=3",
            ],
            rows,
        )
        add("")
        if "bft_cft_ratio.png" in images:
            add(f"![BFT/CFT]({image_prefix}bft_cft_ratio.png)")
            add("")

    # Sizes.
    sizes = sorted({r["point"]["size"] for r in doc["points"]})
    if len(sizes) > 1:
        add("## Transaction size")
        add("")
        rows = []
        for proto in protocols:
            for size in sizes:
                r = find(doc, proto, base_n(proto), size=size)
                if r is None:
                    continue
                t = tps(r)
                rows.append(
                    [
                        f"{proto} n={base_n(proto)}",
                        f"{size:,} B",
                        fmt(t),
                        fmt(t * size / 1e6 if t else None, ".2f"),
                        fmt(light(r), ".1f"),
                        fmt(r["summary"].get("bytes_per_tx")),
                    ]
                )
        lines += table(
            ["cluster", "tx size", "tx/s", "payload MB/s", "light p50 ms", "peer bytes/tx"], rows
        )
        add("")
        if "tx_size.png" in images:
            add(f"![tx size]({image_prefix}tx_size.png)")
            add("")

    # TLS.
    tls_rows = []
    for proto in protocols:
        on, off = find(doc, proto, base_n(proto)), find(doc, proto, base_n(proto), tls=False)
        if on and off:
            tls_rows.append(
                [
                    f"{proto} n={base_n(proto)}",
                    fmt(tps(on)),
                    fmt(tps(off)),
                    fmt(ratio(tps(on), tps(off)), ".2f", "x"),
                    fmt(light(on), ".2f"),
                    fmt(light(off), ".2f"),
                    fmt(on["summary"].get("replica_cpu_per_1000"), ".3f"),
                    fmt(off["summary"].get("replica_cpu_per_1000"), ".3f"),
                ]
            )
    if tls_rows:
        add("## Cost of TLS")
        add("")
        lines += table(
            [
                "cluster",
                "TLS tx/s",
                "plaintext tx/s",
                "TLS/plain",
                "TLS p50 ms",
                "plain p50 ms",
                "TLS CPU s/1k",
                "plain CPU s/1k",
            ],
            tls_rows,
        )
        add("")
        if "tls_cost.png" in images:
            add(f"![TLS cost]({image_prefix}tls_cost.png)")
            add("")

    # Signatures.
    ed = doc.get("ed25519", {})
    sig_rows = []
    for proto in protocols:
        n = base_n(proto)
        off, on = find(doc, proto, n), find(doc, proto, n, sign=True)
        if on is None:
            continue
        limit = verify_limit(doc, n)
        sig_rows.append(
            [
                f"{proto} n={n}",
                fmt(tps(off)),
                fmt(tps(on)),
                fmt(ratio(tps(on), tps(off)), ".2f", "x"),
                fmt(limit),
                fmt(ratio(tps(on), limit), ".0%") if limit else "-",
                fmt(light(on), ".2f"),
            ]
        )
    if sig_rows:
        add("## Cost of client signatures")
        add("")
        if ed:
            add(
                f"Ed25519 measured in this run: {ed['verify_per_s']:,.0f} signed-transaction "
                f"verifications/s on one core, {ed['sign_us']:.1f} us per signature. "
                f"*Limit* = cores x verify rate / n (every replica checks every client signature "
                f"once, on all {m['cores']} cores, with nothing else to do)."
            )
            add("")
        lines += table(
            [
                "cluster",
                "unsigned tx/s",
                "signed tx/s",
                "signed/unsigned",
                "Ed25519 limit tx/s",
                "signed/limit",
                "signed light p50 ms",
            ],
            sig_rows,
        )
        add("")
        if "signature_cost.png" in images:
            add(f"![signature cost]({image_prefix}signature_cost.png)")
            add("")

    # Batch.
    batch_rows = []
    batch_configs = sorted(
        {
            (r["point"]["max_txs"] or 500, r["point"]["linger_ticks"] or 0)
            for r in doc["points"]
            if r["point"]["section"] == "batch"
        }
        | ({(500, 0)} if any(r["point"]["section"] == "batch" for r in doc["points"]) else set())
    )
    for max_txs, linger_ticks in batch_configs:
        r = find(doc, "pbft", 4, max_txs=max_txs, linger_ticks=linger_ticks)
        if r is None:
            continue
        s = r["summary"]
        batch_rows.append(
            [
                max_txs,
                linger_ticks,
                fmt(tps(r)),
                fmt(light(r), ".2f"),
                fmt(s.get("txs_per_block"), ".0f"),
                fmt(s.get("messages_per_block"), ".1f"),
                fmt(s.get("replica_cpu_per_1000"), ".3f"),
            ]
        )
    if batch_rows:
        add("## Batch size and linger (PBFT n=4)")
        add("")
        lines += table(
            [
                "max tx/batch",
                "linger ticks (10 ms)",
                "tx/s",
                "light p50 ms",
                "tx/block",
                "msgs/block",
                "replica CPU s/1k",
            ],
            batch_rows,
        )
        add("")

    # Baselines.
    base = doc.get("baselines")
    if base:
        add("## Baselines")
        add("")
        ps = base.get("pysyncobj", {})
        if "skipped" in ps:
            add(f"- PySyncObj: skipped: {ps['skipped']}")
        else:
            thr, lt = ps.get("throughput", {}), ps.get("light", {})
            if "error" in thr:
                add(f"- PySyncObj throughput run failed: {thr['error']}")
            else:
                raft = find(doc, "raft", 3)
                add(
                    f"- PySyncObj {_version(doc, 'pysyncobj')}, 3 nodes on loopback, "
                    f"{thr.get('succeeded', 0):,} commands of {ps['size']} B, window "
                    f"{ps['window']} split over the nodes, journal in memory, no fsync, no client "
                    f"network path: **{fmt(thr.get('tps'))} commands/s**, "
                    f"{fmt(thr.get('cpu_per_1000'), '.3f')} CPU s/1k. "
                    f"Our Raft n=3 (fsync, TLS, client over the network): {fmt(tps(raft))} tx/s "
                    f"= {fmt(ratio(tps(raft), thr.get('tps')), '.2f', 'x')} PySyncObj."
                )
            if "error" in lt:
                add(f"- PySyncObj light-load run failed: {lt['error']}")
            elif lt:
                lat = lt.get("latency_ms", {})
                add(
                    f"- PySyncObj light load (leader, window 1): p50 {fmt(lat.get('p50'), '.2f')} "
                    f"ms, p99 {fmt(lat.get('p99'), '.2f')} ms (in-process call, no client network)."
                )
        etcd = base.get("etcd", {})
        if "skipped" in etcd:
            add(f"- etcd: skipped: {etcd['skipped']}")
        elif "error" in etcd:
            add(f"- etcd failed: {etcd['error']}")
        else:
            thr, lt = etcd.get("throughput", {}), etcd.get("light", {})
            raft = find(doc, "raft", 3)
            if "error" in thr:
                add(f"- etcd throughput run failed: {thr['error']}")
            elif thr:
                add(
                    f"- {etcd.get('version', 'etcd')}, 3 members on loopback (WAL fsync'd, no "
                    f"TLS), {thr.get('succeeded', 0):,} puts of {etcd['size']} B through the v3 "
                    f"JSON gateway, {etcd['window']} outstanding from a separate Python load "
                    f"process (HTTP/1.1 keep-alive): **{fmt(thr.get('tps'))} puts/s**, "
                    f"{fmt(thr.get('cpu_per_1000'), '.3f')} CPU s/1k in the members and "
                    f"{fmt(thr.get('loader_cpu_per_1000'), '.3f')} in the load process (one HTTP "
                    f"request per put: it can be the bottleneck), "
                    f"{thr.get('failures', 0)} failed. Our Raft n=3: {fmt(tps(raft))} tx/s = "
                    f"{fmt(ratio(tps(raft), thr.get('tps')), '.2f', 'x')} etcd."
                )
            if "error" in lt:
                add(f"- etcd light-load run failed: {lt['error']}")
            elif lt:
                lat = lt.get("latency_ms", {})
                add(
                    f"- etcd light load (leader, one put outstanding): p50 "
                    f"{fmt(lat.get('p50'), '.2f')} ms, p99 {fmt(lat.get('p99'), '.2f')} ms."
                )
        add("")

    # Targets.
    add("## Against the targets")
    add("")
    rows = []
    for proto in BFT:
        r = find(doc, proto, 4)
        if r is not None:
            rows.append(
                _target(
                    f"{proto} n=4, 256 B, TLS, unsigned",
                    ">= 20,000 tx/s",
                    tps(r),
                    lambda v: v >= 20000,
                    ",.0f",
                    " tx/s",
                )
            )
            rows.append(
                _target(
                    f"{proto} n=4, same, CPU ceiling",
                    ">= 20,000 tx/s",
                    cpu_ceiling(doc, r),
                    lambda v: v >= 20000,
                    ",.0f",
                    " tx/s",
                )
            )
    for proto in BFT:
        on, limit = find(doc, proto, 4, sign=True), verify_limit(doc, 4)
        if on is not None and limit:
            rows.append(
                _target(
                    f"{proto} n=4 signed",
                    ">= 80 % of Ed25519 limit",
                    ratio(tps(on), limit),
                    lambda v: v >= 0.8,
                    ".0%",
                )
            )
    ps_tps = ((base or {}).get("pysyncobj", {}).get("throughput") or {}).get("tps")
    raft = find(doc, "raft", 3)
    if raft is not None and ps_tps:
        rows.append(
            _target(
                "raft n=3 vs PySyncObj",
                ">= 1.00x",
                ratio(tps(raft), ps_tps),
                lambda v: v >= 1.0,
                ".2f",
                "x",
            )
        )
    for proto, bound in (("raft", 3.0), ("pbft", 5.0), ("hotstuff", 15.0)):
        r = find(doc, proto, base_n(proto))
        if r is not None:
            rows.append(
                _target(
                    f"{proto} light-load p50",
                    f"<= {bound:g} ms",
                    light(r),
                    lambda v, b=bound: v <= b,
                    ".2f",
                    " ms",
                )
            )
    ns_h = sorted(
        r["point"]["n"]
        for r in doc["points"]
        if r["point"]["protocol"] == "hotstuff" and r["point"]["n"] >= 10
    )
    if ns_h:
        h4, h10 = tps(find(doc, "hotstuff", 4)), tps(find(doc, "hotstuff", 10))
        rows.append(
            _target("hotstuff n=10 / n=4", ">= 50 %", ratio(h10, h4), lambda v: v >= 0.5, ".1%")
        )
    lines += table(["figure", "target", "measured", "met"], rows)
    add("")

    # The closed loop's window ramp.
    ramps = [r for r in doc["points"] if len(r.get("summary", {}).get("window_ramp") or ()) > 1]
    if ramps:
        add("## Closed-loop window")
        add("")
        add(
            "A closed loop commits at most *window / latency*: the window doubles while doubling "
            "raised the committed throughput by 10 % or more, and the point's figure comes from "
            "the last window that paid (first run at each window shown)."
        )
        add("")
        rows = []
        for r in ramps:
            s = r["summary"]
            rows.append(
                [
                    r["point"]["key"],
                    ", ".join(f"{w:,}: {fmt(t)}" for w, t in s["window_ramp"]),
                    fmt(s.get("sat_window")),
                ]
            )
        lines += table(["point", "window: tx/s", "kept"], rows)
        add("")

    # Checks and failures.
    add("## Checks")
    add("")
    rows = []
    start_rate = doc.get("ed25519", {}).get("verify_per_s")
    for r in doc["points"]:
        phases = r.get("phases", {})
        acked = sum(p.get("acked_total", 0) for p in phases.values())
        speed = r.get("ed25519_before")
        machine = fmt(speed)
        if speed and start_rate and speed < (1 - SLOW_POINT) * start_rate:
            machine += " **slow**"
        ledger = sum(p.get("ledger_committed", 0) for p in phases.values())
        v = r.get("verify", {})
        rows.append(
            [
                r["point"]["key"],
                f"{acked:,}",
                f"{ledger:,}",
                "ok"
                if v.get("ok") and v.get("identical")
                else ("ok (heights differ)" if v.get("ok") else "**FAILED**"),
                "ok" if r.get("summary", {}).get("ledger_ok") else "**NO**",
                machine,
                r.get("error", ""),
            ]
        )
    lines += table(
        [
            "point",
            "acknowledged",
            "in ledger",
            "ledgers verify",
            "ledger covers acks",
            "Ed25519/s before",
            "error",
        ],
        rows,
    )
    add("")
    return "\n".join(lines) + "\n"


def _version(doc: Doc, name: str) -> str:
    return str(doc.get("versions", {}).get(name, ""))


def _target(
    name: str,
    target: str,
    value: float | None,
    met: Callable[[float], bool],
    spec: str,
    unit: str = "",
) -> list[str]:
    if value is None:
        return [name, target, "-", "not measured"]
    return [name, target, fmt(value, spec, unit), "met" if met(value) else "**missed**"]


def write_outputs(doc: Doc, out: Path, *, plots: bool = True) -> list[Path]:
    """Write ``results.json``, the plots and ``report.md`` to ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json"]
    written[0].write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", "utf-8")
    images = plot_all(doc, out) if plots else []
    report = out / "report.md"
    title = "# Cluster benchmark" + (
        " (quick: smoke-test sizes, not meaningful)" if doc.get("quick") else ""
    )
    report.write_text(title + "\n\n" + render_markdown(doc, "", [p.name for p in images]), "utf-8")
    return [*written, *images, report]


START, END = "<!-- cluster-report:start -->", "<!-- cluster-report:end -->"


def embed(doc: Doc, page: Path, out: Path, images: Sequence[str]) -> None:
    """Replace the report between the markers in ``page`` (a Markdown page that links the plots
    in ``out``) with this run's report."""
    text = page.read_text("utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{page}: no {START} ... {END} markers to put the report between")
    prefix = os.path.relpath(out, page.parent).replace(os.sep, "/") + "/"
    body = "".join(
        "#" + line if line.startswith("## ") else line
        for line in render_markdown(doc, prefix, images).splitlines(keepends=True)
    )  # one level below the page's own sections
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    page.write_text(f"{head}{START}\n{body}{END}{tail}", "utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="rebuild the cluster benchmark's report from results.json"
    )
    p.add_argument("results", help="a results.json written by bench.cluster_bench")
    p.add_argument("--out", help="where to write (default: beside results.json)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--embed",
        metavar="PAGE",
        help=f"also put the report into PAGE between the lines {START} and {END}",
    )
    args = p.parse_args(argv)
    source = Path(args.results)
    doc = json.loads(source.read_text("utf-8"))
    out = Path(args.out) if args.out else source.parent
    written = write_outputs(doc, out, plots=not args.no_plots)
    for path in written:
        print(f"wrote {path}")
    if args.embed:
        embed(doc, Path(args.embed), out, [p.name for p in written if p.suffix == ".png"])
        print(f"updated {args.embed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

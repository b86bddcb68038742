"""The cluster at a glance: every replica's status, who leads, heights, lag and health.

Statuses come from each replica's client port (``StatusRequest``), asked concurrently with a
short timeout; a replica that does not answer is ``unreachable``. When the cluster directory has
pid files (a local testbed), the process state is shown too: a replica whose process is gone is
``down``, one stopped by SIGSTOP is ``paused``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from bft.client import Client

from .layout import Cluster
from .processes import PAUSED, STOPPED, Processes, ProcessState

BEHIND = 8
"""A replica more than this many blocks below the highest is ``behind``."""


def fault_tolerance(protocol: str, n: int) -> tuple[int, int]:
    """``(f, quorum)``: faults tolerated and the replicas needed to make progress."""
    if protocol == "raft":
        f = (n - 1) // 2
        return f, n // 2 + 1
    f = (n - 1) // 3
    return f, n - f


@dataclass
class ReplicaView:
    replica: int
    status: dict[str, Any] | None
    process: ProcessState | None = None
    health: str = ""
    lag: int | None = None


@dataclass
class ClusterView:
    protocol: str
    n: int
    replicas: list[ReplicaView]
    leader: int | None = None
    leader_votes: int = 0
    height: int = 0
    healthy: int = 0
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "n": self.n,
            "leader": self.leader,
            "leader_votes": self.leader_votes,
            "height": self.height,
            "healthy": self.healthy,
            "verdict": self.verdict,
            "replicas": [
                {
                    "replica": r.replica,
                    "health": r.health,
                    "lag": r.lag,
                    "pid": r.process.pid if r.process else None,
                    "process": r.process.state if r.process else None,
                    "status": r.status,
                }
                for r in self.replicas
            ],
        }


async def ask_statuses(
    client: Client, n: int, *, timeout: float = 1.0, verbose: bool = False
) -> dict[int, dict[str, Any] | None]:
    """Every replica's status (``None`` for one that did not answer in ``timeout``)."""
    results: dict[int, dict[str, Any] | None] = {}

    async def one(replica: int) -> None:
        results[replica] = await client.status(replica, verbose=verbose, timeout=timeout)

    async with trio.open_nursery() as nursery:
        for replica in range(n):
            nursery.start_soon(one, replica)
    return results


def assess(
    cluster: Cluster,
    statuses: dict[int, dict[str, Any] | None],
    processes: Processes | None = None,
) -> ClusterView:
    """Combine statuses (and process states) into the cluster's picture."""
    n = cluster.n
    f, quorum = fault_tolerance(cluster.protocol, n)
    has_pids = processes is not None and any(
        processes.pid_file(i).exists() or processes.log_file(i).exists() for i in range(n)
    )
    rows = [
        ReplicaView(i, statuses.get(i), processes.state(i) if has_pids and processes else None)
        for i in range(n)
    ]
    answering = [r for r in rows if r.status is not None]
    height = max((int(r.status["height"]) for r in answering if r.status), default=0)
    votes = Counter(r.status.get("leader") for r in answering if r.status)
    votes.pop(None, None)
    leader, leader_votes = votes.most_common(1)[0] if votes else (None, 0)
    for row in rows:
        status = row.status
        if status is not None:
            row.lag = height - int(status["height"])
        if row.process is not None and row.process.state == STOPPED:
            row.health = "down"
        elif row.process is not None and row.process.state == PAUSED:
            row.health = "paused"
        elif status is None:
            row.health = "unreachable"
        elif status.get("byzantine"):
            row.health = f"byzantine ({status['byzantine']})"
        elif row.lag is not None and row.lag > BEHIND:
            row.health = "behind"
        elif status.get("role") in ("view-change", "candidate", "pre-candidate"):
            row.health = "changing view" if status["role"] == "view-change" else "electing"
        elif status.get("faults"):
            row.health = "ok (faults injected)"
        else:
            row.health = "ok"
    healthy = sum(1 for r in rows if r.health.startswith("ok"))
    if healthy == n:
        verdict = "healthy"
    elif healthy >= quorum:
        verdict = f"degraded: {n - healthy} of {n} replicas faulty (tolerates {f})"
    else:
        verdict = f"NO QUORUM: {healthy} of {n} replicas healthy, {quorum} needed"
    view = ClusterView(
        protocol=cluster.protocol,
        n=n,
        replicas=rows,
        leader=leader,
        leader_votes=leader_votes,
        height=height,
        healthy=healthy,
        verdict=verdict,
    )
    if answering and leader_votes < len(answering):
        view.notes.append(
            f"replicas disagree on the leader ({dict(votes)}): a view change or election is "
            "under way, or a partition"
        )
    return view


def _cell(status: dict[str, Any] | None, key: str, fmt: str = "{}") -> str:
    if status is None or status.get(key) is None:
        return "-"
    return fmt.format(status[key])


def render(view: ClusterView, title: str | None = None) -> Any:
    """A rich table of the cluster (one row per replica) with a caption: leader and verdict."""
    from rich import box
    from rich.table import Table

    term = "term" if view.protocol == "raft" else "view"
    table = Table(
        title=title or f"{view.protocol} cluster of {view.n}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name, justify in (
        ("replica", "right"),
        ("pid", "right"),
        ("role", "left"),
        (term, "right"),
        ("leader", "right"),
        ("height", "right"),
        ("lag", "right"),
        ("tx/s", "right"),
        ("p50 ms", "right"),
        ("mempool", "right"),
        ("peers", "right"),
        ("health", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in view.replicas:
        s = row.status
        colour = "green" if row.health.startswith("ok") else "red"
        if row.health in ("behind", "paused", "electing", "changing view") or row.health.startswith(
            "byzantine"
        ):
            colour = "yellow"
        table.add_row(
            str(row.replica),
            str(row.process.pid) if row.process and row.process.pid else "-",
            _cell(s, "role"),
            _cell(s, "view"),
            _cell(s, "leader"),
            _cell(s, "height"),
            "-" if row.lag is None else str(row.lag),
            _cell(s, "tx_per_s", "{:,.0f}"),
            _cell(s, "commit_ms_p50", "{:.1f}"),
            _cell(s, "mempool"),
            "-" if s is None else f"{s.get('peers_connected', 0)}/{view.n - 1}",
            f"[{colour}]{row.health}[/{colour}]",
        )
    leader = "none agreed" if view.leader is None else f"replica {view.leader}"
    colour = "green" if view.verdict == "healthy" else "yellow"
    if view.verdict.startswith("NO QUORUM"):
        colour = "red"
    caption = [
        f"leader: {leader} ({view.leader_votes} of {view.n} agree)   height: {view.height}   "
        f"[{colour}]{view.verdict}[/{colour}]",
        *view.notes,
    ]
    table.caption = "\n".join(caption)
    table.caption_justify = "left"
    return table


def to_json_text(view: ClusterView) -> str:
    return json.dumps(view.to_json(), indent=2)

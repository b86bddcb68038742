"""Each replica in its own Linux network namespace, so link faults cut real links.

Theory of operation
-------------------
:class:`NetnsTopology` makes, for a cluster of ``n`` replicas (needs root and ``ip``):

* a namespace ``bft-<tag>-<i>`` per replica, whose loopback carries the replica's own peer
  address ``10.<A>.0.<i+1>``;
* a full mesh of veth pairs between the namespaces (in namespace ``i`` the link to ``j`` is
  ``to<j>``), with a host route to each peer's address over its own link, so replica ``i``
  reaches replica ``j`` over exactly one cable;
* one more veth pair per replica to the root namespace, ``10.<A>.<i+1>.1`` (root) to
  ``10.<A>.<i+1>.2`` (replica), on which the replica serves clients: the load, the admin client
  and the tests run in the root namespace and reach every replica as real clients would.

All addresses are private and exist only inside namespaces this object made; nothing leaves the
machine. Faults then act on the kernel's links, not on the replica's own fault injection:

* ``partition``: the veth between two groups is set down at both ends (a cut cable; the
  kernel drops the routes, which :meth:`heal` restores);
* ``cut A B`` (one way): a blackhole route in A towards B. A's packets to B are lost; B's reach
  A, but A cannot answer them, as with a real one-way fault (TCP needs both ways);
* ``slow R``: a token-bucket filter (``tc qdisc tbf``) at a low rate on every link of R, both
  ways: queues build up and every message to or from R waits behind them.

The kernel here may lack ``netem`` (random loss, fixed delay) and tc classifiers; random loss
stays with the replicas' own injection (``Control`` ``drop``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from .processes import TestbedError

PEER_PORT = 7000
CLIENT_PORT = 8000


class NetnsError(TestbedError):
    """A namespace or link could not be made or changed; the message quotes ``ip``/``tc``."""


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or ``None`` when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"no {tool!r} command"
    name = f"bft-probe-{secrets.token_hex(3)}"
    done = _run("ip", "netns", "add", name, check=False)
    if done.returncode != 0:
        return f"ip netns add fails: {done.stderr.strip()}"
    try:
        probe = _run(
            "ip", "link", "add", "p0", "netns", name, "type", "veth", "peer", "name", "p1",
            "netns", name, check=False,
        )  # fmt: skip
        if probe.returncode != 0:
            return f"veth links cannot be made: {probe.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", name, check=False)
    return None


def namespace_exists(name: str) -> bool:
    return name in _run("ip", "netns", "list", check=False).stdout.split()


def _free_subnet() -> int:
    """A second octet ``A`` such that no route of the root namespace is in ``10.A.0.0/16``."""
    routes = _run("ip", "-4", "route", "show", "table", "all", check=False).stdout
    for _ in range(100):
        candidate = 64 + secrets.randbelow(190)
        if f"10.{candidate}." not in routes:
            return candidate
    raise NetnsError("no free 10.x.0.0/16 subnet for the namespaces")


class NetnsTopology:
    """The namespaces and links of one cluster (see the module's docstring)."""

    def __init__(self, n: int, *, tag: str | None = None, subnet: int | None = None) -> None:
        if not 1 <= n <= 100:
            raise NetnsError("a namespaced cluster has 1..100 replicas")
        self.n = n
        self.tag = tag or secrets.token_hex(2)
        self.subnet = subnet if subnet is not None else _free_subnet()
        self.created: list[str] = []
        self.down: set[tuple[int, int]] = set()
        self.blackholed: set[tuple[int, int]] = set()
        self.shaped: set[tuple[int, int]] = set()
        self.created_names: list[str] = []

    # ------------------------------------------------------------------------------ names

    def namespace(self, i: int) -> str:
        return f"bft-{self.tag}-{i}"

    def peer_host(self, i: int) -> str:
        return f"10.{self.subnet}.0.{i + 1}"

    def client_host(self, i: int) -> str:
        return f"10.{self.subnet}.{i + 1}.2"

    def addresses(self) -> dict[int, tuple[tuple[str, int], tuple[str, int]]]:
        """Each replica's ``(peer, client)`` address, for :func:`~bft.testbed.init_cluster`."""
        return {
            i: ((self.peer_host(i), PEER_PORT), (self.client_host(i), CLIENT_PORT))
            for i in range(self.n)
        }

    def launcher(self, i: int) -> Sequence[str]:
        """The command prefix that runs replica ``i`` in its namespace (``ip netns exec``
        execs the command: the replica keeps the pid the testbed started)."""
        return ("ip", "netns", "exec", self.namespace(i))

    def _ns(self, i: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.namespace(i), *args, check=check)

    # ------------------------------------------------------------------------------ life cycle

    def create(self) -> None:
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise

    def _create(self) -> None:
        for i in range(self.n):
            ns = self.namespace(i)
            _run("ip", "netns", "add", ns)
            self.created.append(ns)
            self._ns(i, "ip", "link", "set", "lo", "up")
            self._ns(i, "ip", "addr", "add", f"{self.peer_host(i)}/32", "dev", "lo")
            root_end = f"bc{self.tag}{i}"
            _run("ip", "link", "add", root_end, "type", "veth", "peer", "name", "cl", "netns", ns)
            _run("ip", "addr", "add", f"10.{self.subnet}.{i + 1}.1/24", "dev", root_end)
            _run("ip", "link", "set", root_end, "up")
            self._ns(i, "ip", "addr", "add", f"{self.client_host(i)}/24", "dev", "cl")
            self._ns(i, "ip", "link", "set", "cl", "up")
        for i in range(self.n):
            for j in range(i + 1, self.n):
                _run(
                    "ip", "link", "add", f"to{j}", "netns", self.namespace(i), "type", "veth",
                    "peer", "name", f"to{i}", "netns", self.namespace(j),
                )  # fmt: skip
                self._link_up(i, j)
                self._link_up(j, i)

    def destroy(self) -> None:
        """Delete every namespace made (their links go with them)."""
        self.created_names = list(self.created)
        for ns in self.created:
            _run("ip", "netns", "del", ns, check=False)
        self.created.clear()

    def __enter__(self) -> NetnsTopology:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ------------------------------------------------------------------------------ links

    def _link_up(self, i: int, j: int) -> None:
        self._ns(i, "ip", "link", "set", f"to{j}", "up")
        self._ns(
            i, "ip", "route", "replace", f"{self.peer_host(j)}/32", "dev", f"to{j}",
            "src", self.peer_host(i),
        )  # fmt: skip

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Cut, at both ends, every link between replicas of different groups (a replica in no
        group is cut off from all)."""
        group_of: dict[int, int] = {}
        for g, members in enumerate(groups):
            for member in members:
                group_of[member] = g
        for i in range(self.n):
            for j in range(i + 1, self.n):
                if group_of.get(i, -1 - i) != group_of.get(j, -1 - j):
                    self.cut_link(i, j)

    def cut_link(self, i: int, j: int) -> None:
        for a, b in ((i, j), (j, i)):
            self._ns(a, "ip", "link", "set", f"to{b}", "down")
            self.down.add((a, b))

    def cut_one_way(self, sender: int, receiver: int) -> None:
        """``sender``'s packets to ``receiver`` are dropped (a blackhole route)."""
        self._ns(sender, "ip", "route", "replace", "blackhole", f"{self.peer_host(receiver)}/32")
        self.blackholed.add((sender, receiver))

    def slow(self, replica: int, rate_kbit: int = 2000) -> None:
        """Every link of ``replica``, both ways, shaped to ``rate_kbit`` (queues, then waits)."""
        for other in range(self.n):
            if other == replica:
                continue
            for a, b in ((replica, other), (other, replica)):
                self._ns(
                    a, "tc", "qdisc", "replace", "dev", f"to{b}", "root", "tbf",
                    "rate", f"{rate_kbit}kbit", "burst", "16kb", "latency", "5s",
                )  # fmt: skip
                self.shaped.add((a, b))

    def heal(self) -> None:
        """Every link up, every route back, no shaping."""
        for a, b in sorted(self.shaped):
            self._ns(a, "tc", "qdisc", "del", "dev", f"to{b}", "root", check=False)
        self.shaped.clear()
        for a, b in sorted(self.down | self.blackholed):
            self._link_up(a, b)
        self.down.clear()
        self.blackholed.clear()

    def can_connect(self, i: int, j: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from namespace ``i`` to ``j``'s peer port gets through (a
        probe for tests: a refused connection got through, a timeout or an error did not)."""
        script = (
            "import socket,sys\n"
            "s=socket.socket()\n"
            f"s.settimeout({timeout})\n"
            "try:\n"
            f"    s.connect(('{self.peer_host(j)}', {PEER_PORT}))\n"
            "except ConnectionRefusedError:\n"
            "    sys.exit(0)\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        import sys

        return self._ns(i, sys.executable, "-c", script, check=False).returncode == 0

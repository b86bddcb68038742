"""A local cluster's directory: keys, certificates and configuration for every replica.

``init_cluster`` writes::

    DIR/cluster.toml            what clients and tools need: chain, protocol, addresses, files
    DIR/keys/committee.toml     the committee (public)
    DIR/keys/replica-<i>.key    replica secret keys (0600)
    DIR/keys/client-<name>.key  a client key and an admin client key
    DIR/tls/ca.crt, ca.key      the cluster CA; certificates for every replica and client
    DIR/replica-<i>.toml        each replica's configuration
    DIR/data/replica-<i>/       each replica's ledger and protocol log (created when it runs)

Ports are chosen free on the loopback interface when the cluster is made, so a second cluster on
the same machine does not collide with the first.
"""

from __future__ import annotations

import os
import random
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path

from crypto import Committee, SigningKey
from crypto.keyfiles import write_committee, write_public_file, write_secret_key
from network.tls import client_files, issue_certificate, make_cluster_ca, replica_files

CLUSTER_FILE = "cluster.toml"
CLIENT = "default"
ADMIN = "admin"


class LayoutError(Exception):
    """A cluster directory cannot be made or read; the message names the file."""


@dataclass(frozen=True)
class Cluster:
    """A cluster directory, as clients and tools read it."""

    directory: Path
    chain_id: str
    protocol: str
    n: int
    peers: dict[int, tuple[str, int]]
    clients: dict[int, tuple[str, int]]
    plaintext: bool

    @property
    def committee_file(self) -> Path:
        return self.directory / "keys" / "committee.toml"

    @property
    def tls_dir(self) -> Path:
        return self.directory / "tls"

    def replica_config(self, replica: int) -> Path:
        return self.directory / f"replica-{replica}.toml"

    def data_dir(self, replica: int) -> Path:
        return self.directory / "data" / f"replica-{replica}"

    def client_key(self, name: str = CLIENT) -> Path:
        return self.directory / "keys" / f"client-{name}.key"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that are free now on ``host``.

    They are drawn at random from *below* the kernel's ephemeral range: a port from that range
    (what binding port 0 gives) may meanwhile become the local end of some outgoing connection,
    a replica's or a client's, and the replica that should listen on it would fail to start.
    """
    low, _ = _ephemeral_range()
    span = range(10_000, low)
    pool = random.SystemRandom().sample(span, min(len(span), 16 * count + 64)) if span else []
    sockets: list[socket.socket] = []
    try:
        for port in [*pool, *[0] * count]:
            if len(sockets) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        if len(sockets) < count:
            raise LayoutError(f"cannot find {count} free ports on {host}")
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cores_to_spare(replicas: int) -> bool:
    """Whether ``replicas`` on this machine leave each a core beside its event loop (two cores
    per replica): what checking client signatures on a worker thread needs to pay off."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores >= 2 * replicas


def init_cluster(
    directory: Path,
    *,
    protocol: str = "pbft",
    n: int = 4,
    chain_id: str = "testbed",
    plaintext: bool = False,
    host: str = "127.0.0.1",
    tick_ms: float = 10.0,
    require_client_signatures: bool = False,
    protocol_options: dict[str, object] | None = None,
    addresses: dict[int, tuple[tuple[str, int], tuple[str, int]]] | None = None,
    verify_on_thread: bool | None = None,
) -> Cluster:
    """Make a cluster directory (see the module's docstring).

    ``addresses`` gives each replica its own ``(peer, client)`` addresses instead of free ports
    on ``host`` (a testbed whose replicas live in network namespaces, say).
    ``verify_on_thread`` is each replica's ``[crypto] verify_on_thread``; by default it is on
    only when this machine has two cores per replica (:func:`cores_to_spare`), since the
    replicas all run here.
    """
    directory = Path(directory)
    if (directory / CLUSTER_FILE).exists():
        raise LayoutError(f"{directory} already holds a cluster; use another directory")
    minimum = 1
    if n < minimum:
        raise LayoutError("a cluster needs at least one replica")
    keys_dir, tls_dir = directory / "keys", directory / "tls"
    keys_dir.mkdir(parents=True, exist_ok=True)
    keys = [SigningKey.generate() for _ in range(n)]
    committee = Committee(chain_id, [k.public_key for k in keys], protocol)
    write_committee(keys_dir / "committee.toml", committee)
    for i, key in enumerate(keys):
        write_secret_key(
            keys_dir / f"replica-{i}.key", key, chain_id=chain_id, role="replica", id=i
        )
    client_keys = {name: SigningKey.generate() for name in (CLIENT, ADMIN)}
    for name, key in client_keys.items():
        write_secret_key(
            keys_dir / f"client-{name}.key", key, chain_id=chain_id, role="client", id=name
        )
    ca_cert, ca_key = make_cluster_ca(tls_dir, chain_id)
    for i, key in enumerate(keys):
        files = replica_files(tls_dir, i)
        issue_certificate(ca_cert, ca_key, key, f"replica-{i}", files.cert, files.key)
    for name, key in client_keys.items():
        files = client_files(tls_dir, name)
        issue_certificate(ca_cert, ca_key, key, f"client-{name}", files.cert, files.key)
    if addresses is not None:
        if sorted(addresses) != list(range(n)):
            raise LayoutError(f"addresses must name replicas 0..{n - 1}")
        peers = {i: addresses[i][0] for i in range(n)}
        clients = {i: addresses[i][1] for i in range(n)}
    else:
        ports = free_ports(2 * n, host)
        peers = {i: (host, ports[i]) for i in range(n)}
        clients = {i: (host, ports[n + i]) for i in range(n)}
    options = protocol_options or {}
    if verify_on_thread is None:
        verify_on_thread = cores_to_spare(n)
    for i in range(n):
        lines = [
            f"# Replica {i} of chain {chain_id!r} ({protocol}). Paths are relative to this file.",
            "[replica]",
            f"id = {i}",
            f'protocol = "{protocol}"',
            'committee = "keys/committee.toml"',
            f'key = "keys/replica-{i}.key"',
            f'data_dir = "data/replica-{i}"',
            "",
            "[network]",
            f'listen = "{peers[i][0]}:{peers[i][1]}"',
            f'client_listen = "{clients[i][0]}:{clients[i][1]}"',
            f"plaintext = {'true' if plaintext else 'false'}",
            'tls_ca = "tls/ca.crt"',
            f'tls_cert = "tls/replica-{i}.crt"',
            f'tls_key = "tls/replica-{i}.tls.key"',
            "",
            "[peers]",
            *(f'{j} = "{peers[j][0]}:{peers[j][1]}"' for j in range(n)),
            "",
            "[timing]",
            f"tick_ms = {tick_ms}",
            "",
            "[limits]",
            f"require_client_signatures = {'true' if require_client_signatures else 'false'}",
            "",
            "[admin]",
            f'keys = ["{client_keys[ADMIN].public_key.hex()}"]',
            "",
            "[crypto]",
            f"verify_on_thread = {'true' if verify_on_thread else 'false'}",
        ]
        if options:
            lines += ["", f"[{protocol}]", *(f"{k} = {_toml(v)}" for k, v in options.items())]
        write_public_file(directory / f"replica-{i}.toml", "\n".join(lines) + "\n")
    summary = [
        f"# A local {protocol} cluster of {n} replicas. Clients and tools read this file.",
        'format = "bft-cluster-v1"',
        f'chain_id = "{chain_id}"',
        f'protocol = "{protocol}"',
        f"n = {n}",
        f"plaintext = {'true' if plaintext else 'false'}",
        'committee = "keys/committee.toml"',
        "",
        "[replicas]",
        *(
            f'{i} = {{ peer = "{peers[i][0]}:{peers[i][1]}", '
            f'client = "{clients[i][0]}:{clients[i][1]}" }}'
            for i in range(n)
        ),
    ]
    write_public_file(directory / CLUSTER_FILE, "\n".join(summary) + "\n")
    return load_cluster(directory)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return f'"{value}"'


def load_cluster(directory: Path) -> Cluster:
    path = Path(directory) / CLUSTER_FILE
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise LayoutError(
            f"{path}: no such file (make a cluster with 'bft testbed init')"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LayoutError(f"{path}: {exc}") from None
    try:
        replicas = doc["replicas"]

        def address(text: str) -> tuple[str, int]:
            host, _, port = text.rpartition(":")
            return host, int(port)

        return Cluster(
            directory=Path(directory),
            chain_id=doc["chain_id"],
            protocol=doc["protocol"],
            n=int(doc["n"]),
            peers={int(k): address(v["peer"]) for k, v in replicas.items()},
            clients={int(k): address(v["client"]) for k, v in replicas.items()},
            plaintext=bool(doc.get("plaintext", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LayoutError(f"{path}: malformed cluster file ({exc})") from None

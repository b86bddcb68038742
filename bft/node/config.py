"""A replica's configuration: one TOML file, validated on load.

Every error names the file and the key, in one line. Relative paths are relative to the file::

    [replica]
    id = 0
    protocol = "pbft"                     # pbft, hotstuff or raft
    committee = "keys/committee.toml"
    key = "keys/replica-0.key"
    data_dir = "data/replica-0"

    [network]
    listen = "127.0.0.1:7000"             # replica-to-replica
    client_listen = "127.0.0.1:8000"      # clients
    plaintext = false                     # true only to measure what TLS costs
    tls_ca = "tls/ca.crt"
    tls_cert = "tls/replica-0.crt"
    tls_key = "tls/replica-0.tls.key"

    [peers]                               # every replica's replica-to-replica address
    0 = "127.0.0.1:7000"
    1 = "127.0.0.1:7001"

    [timing]
    tick_ms = 10

    [limits]
    max_tx_bytes = 65536
    require_client_signatures = false

    [admin]
    keys = ["<hex public key of a client allowed to inject faults>"]

    [log]
    format = "text"                       # or "json": one JSON object per line
    level = "info"                        # debug, info, warning, error
    burst = 20                            # lines per reason and window before suppression
    window_s = 10.0

    [metrics]
    listen = "127.0.0.1:9100"             # Prometheus endpoint; absent: no endpoint

    [evidence]
    max_kept = 1000                       # evidence files kept in data_dir/evidence

    [memory]
    trim_every_s = 60                     # hand C malloc's free pages back; 0: never

    [disk]
    inline_below_ms = 3.0                 # log/ledger syncs on the event loop while they block
                                          # less than this on average; 0: always on a thread

    [crypto]
    verify_on_thread = true               # client signatures checked on a worker thread; false
                                          # when replicas share cores (see docs/operations.md)

    [pbft]                                # options of the protocol's config, by name
    checkpoint_interval = 16
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bft.core.requests import BatchPolicy
from crypto.committee import PROTOCOLS

KNOWN_KEYS: dict[str, frozenset[str] | None] = {
    "replica": frozenset({"id", "protocol", "committee", "key", "data_dir", "byzantine"}),
    "network": frozenset(
        {
            "listen",
            "client_listen",
            "plaintext",
            "tls_ca",
            "tls_cert",
            "tls_key",
            "handshake_timeout_s",
            "idle_timeout_s",
        }
    ),
    "peers": None,  # replica ids, checked one by one
    "timing": frozenset({"tick_ms"}),
    "limits": frozenset(
        {
            "max_tx_bytes",
            "require_client_signatures",
            "max_frame",
            "client_refusals_per_s",
            "max_client_connections",
            "client_txs_per_s",
            "client_bytes_per_s",
        }
    ),
    "admin": frozenset({"keys"}),
    "log": frozenset({"format", "level", "burst", "window_s"}),
    "metrics": frozenset({"listen"}),
    "evidence": frozenset({"max_kept"}),
    "memory": frozenset({"trim_every_s"}),
    "disk": frozenset({"inline_below_ms"}),
    "crypto": frozenset({"verify_on_thread"}),
    # A table per protocol holds that protocol's options (checked against its config type when
    # the replica runs it; the others stay for a later switch of mode).
    **{name: None for name in PROTOCOLS},
}
"""Every table and key a replica's file may hold: anything else is a typo, and an error."""

LOG_LEVELS = ("debug", "info", "warning", "error")
BYZANTINE_MODES = ("silent", "equivocate", "twin", "bad-signatures", "bad-replies")
"""Test and testbed only: how a replica misbehaves (see docs/testbed.md)."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""

    def __init__(self, path: Path | str, key: str, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        where = f"{self.path}: [{key}]" if key else self.path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class ReplicaConfig:
    path: Path
    replica: int
    protocol: str
    committee_file: Path
    key_file: Path
    data_dir: Path
    listen: tuple[str, int]
    client_listen: tuple[str, int]
    peers: dict[int, tuple[str, int]]
    plaintext: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tick_ms: float = 10.0
    max_tx_bytes: int = 64 * 1024
    require_client_signatures: bool = False
    max_frame: int = 16 * 1024 * 1024
    admin_keys: frozenset[bytes] = frozenset()
    protocol_options: dict[str, Any] = field(default_factory=dict)
    byzantine: str = ""
    """Test and testbed only: one of :data:`BYZANTINE_MODES`, or "" (honest)."""
    handshake_timeout_s: float = 5.0
    idle_timeout_s: float = 30.0
    client_refusals_per_s: float = 200.0
    """Refused transactions a client connection may cause per second before the replica stops
    reading from it for a while (0: no limit)."""
    max_client_connections: int = 1024
    """Client connections open at once at most (those in their handshake included); a new one
    beyond it is closed at once."""
    client_txs_per_s: float = 0.0
    """Transactions a client connection may submit per second (0: no limit)."""
    client_bytes_per_s: float = 0.0
    """Transaction bytes a client connection may submit per second (0: no limit)."""
    log_format: str = "text"
    log_level: str = "info"
    log_burst: int = 20
    log_window_s: float = 10.0
    metrics_listen: tuple[str, int] | None = None
    evidence_kept: int = 1000
    trim_every_s: float = 60.0
    """How often the replica asks C malloc to return the free pages of its arenas to the
    kernel (0: never); see :mod:`bft.node.memory`."""
    disk_inline_below_ms: float = 3.0
    """Protocol-log and ledger writes run on the event loop while they wait for the disk less
    than this on average, else on a worker thread (0: always); see :mod:`bft.node.disk`."""
    verify_on_thread: bool = True
    """Check a batch of client signatures (8 or more) on a worker thread beside the event loop.
    It pays when the replica has a core to spare; replicas that share cores (a testbed of n
    replicas on fewer than 2n) spend less CPU checking them on the loop."""


def parse_address(text: object, path: Path, key: str) -> tuple[str, int]:
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(path, key, f"expected HOST:PORT, got {text!r}")
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(path, key, f"port {port!r} is not a number") from None
    if not 0 <= number <= 65535 or not host:
        raise ConfigError(path, key, f"invalid address {text!r}")
    return host.strip("[]"), number


def within(low: float, high: float, text: str | None = None) -> Any:
    """A check for :meth:`_Reader.get`: the value lies in ``low..high``."""

    def show(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    reason = text or f"must be {show(low)}..{show(high)}"
    return lambda v: "" if low <= v <= high else reason


class _Reader:
    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc
        self.base = path.parent

    def table(self, name: str, required: bool = True) -> dict[str, Any]:
        value = self.doc.get(name)
        if value is None:
            if required:
                raise ConfigError(self.path, name, "missing table")
            return {}
        if not isinstance(value, dict):
            raise ConfigError(self.path, name, "must be a table")
        return value

    def get(
        self, table: str, key: str, kind: type, default: Any = ..., *, check: Any = None
    ) -> Any:
        section = self.table(table, required=default is ...)
        if key not in section:
            if default is ...:
                raise ConfigError(self.path, f"{table}.{key}", "missing")
            return default
        value = section[key]
        if kind is int and (type(value) is not int):
            raise ConfigError(self.path, f"{table}.{key}", f"must be an integer, got {value!r}")
        if (kind is float and not isinstance(value, int | float)) or (
            isinstance(value, bool) and kind is float
        ):
            raise ConfigError(self.path, f"{table}.{key}", f"must be a number, got {value!r}")
        if kind is bool and type(value) is not bool:
            raise ConfigError(self.path, f"{table}.{key}", f"must be true or false, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ConfigError(self.path, f"{table}.{key}", f"must be a string, got {value!r}")
        if check is not None:
            reason = check(value)
            if reason:
                raise ConfigError(self.path, f"{table}.{key}", reason)
        return value

    def number(self, table: str, key: str, default: float, low: float, high: float) -> float:
        """A float (an integer is fine too) in ``low..high``."""
        return float(self.get(table, key, float, default, check=within(low, high)))

    def file(self, table: str, key: str, default: Any = ...) -> Path | None:
        value = self.get(table, key, str, default)
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() else self.base / path


def load_replica_config(path: Path | str) -> ReplicaConfig:
    """Read and validate a replica's configuration file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    _check_known_keys(path, doc)
    r = _Reader(path, doc)
    protocol = r.get(
        "replica",
        "protocol",
        str,
        check=lambda v: "" if v in PROTOCOLS else f"must be one of {', '.join(PROTOCOLS)}",
    )
    replica = r.get("replica", "id", int, check=within(0, 1023))
    peers_table = r.table("peers")
    peers: dict[int, tuple[str, int]] = {}
    for key, value in peers_table.items():
        try:
            peer = int(key)
        except ValueError:
            raise ConfigError(
                path, f"peers.{key}", "peer keys are replica ids (0, 1, ...)"
            ) from None
        peers[peer] = parse_address(value, path, f"peers.{key}")
    if replica not in peers:
        raise ConfigError(path, "peers", f"lists no address for this replica ({replica})")
    plaintext = r.get("network", "plaintext", bool, False)
    tls = {k: r.file("network", k, None) for k in ("tls_ca", "tls_cert", "tls_key")}
    if not plaintext:
        for key, value in tls.items():
            if value is None:
                raise ConfigError(
                    path,
                    f"network.{key}",
                    "missing (TLS is on; set plaintext = true only to measure it)",
                )
    admin_keys = set()
    for i, text in enumerate(r.get("admin", "keys", list, [])):
        if not isinstance(text, str) or len(text) != 64:
            raise ConfigError(path, f"admin.keys[{i}]", "must be a 64-hex-digit public key")
        try:
            admin_keys.add(bytes.fromhex(text))
        except ValueError:
            raise ConfigError(
                path, f"admin.keys[{i}]", "must be a 64-hex-digit public key"
            ) from None
    options = r.table(protocol, required=False)
    metrics_listen = r.get("metrics", "listen", str, None)
    return ReplicaConfig(
        path=path,
        replica=replica,
        protocol=protocol,
        committee_file=r.file("replica", "committee"),  # type: ignore[arg-type]
        key_file=r.file("replica", "key"),  # type: ignore[arg-type]
        data_dir=r.file("replica", "data_dir"),  # type: ignore[arg-type]
        listen=parse_address(r.get("network", "listen", str), path, "network.listen"),
        client_listen=parse_address(
            r.get("network", "client_listen", str), path, "network.client_listen"
        ),
        peers=peers,
        plaintext=plaintext,
        tls_ca=tls["tls_ca"],
        tls_cert=tls["tls_cert"],
        tls_key=tls["tls_key"],
        tick_ms=r.number("timing", "tick_ms", 10.0, 0.5, 10_000),
        max_tx_bytes=r.get(
            "limits",
            "max_tx_bytes",
            int,
            64 * 1024,
            check=within(16, 4 << 20),
        ),
        require_client_signatures=r.get("limits", "require_client_signatures", bool, False),
        max_frame=r.get(
            "limits",
            "max_frame",
            int,
            16 << 20,
            check=within(1 << 16, 64 << 20, "must be 64 KiB..64 MiB"),
        ),
        admin_keys=frozenset(admin_keys),
        protocol_options=dict(options),
        byzantine=r.get(
            "replica",
            "byzantine",
            str,
            "",
            check=lambda v: (
                ""
                if v in ("", *BYZANTINE_MODES)
                else f"must be one of {', '.join(BYZANTINE_MODES)}"
            ),
        ),
        handshake_timeout_s=r.number("network", "handshake_timeout_s", 5.0, 0.1, 600),
        idle_timeout_s=r.number("network", "idle_timeout_s", 30.0, 1, 86_400),
        client_refusals_per_s=r.number("limits", "client_refusals_per_s", 200.0, 0, 1e9),
        max_client_connections=r.get(
            "limits",
            "max_client_connections",
            int,
            1024,
            check=within(1, 1_000_000),
        ),
        trim_every_s=r.number("memory", "trim_every_s", 60.0, 0, 86_400),
        disk_inline_below_ms=r.number("disk", "inline_below_ms", 3.0, 0, 1_000),
        verify_on_thread=r.get("crypto", "verify_on_thread", bool, True),
        client_txs_per_s=r.number("limits", "client_txs_per_s", 0.0, 0, 1e9),
        client_bytes_per_s=r.number("limits", "client_bytes_per_s", 0.0, 0, 1e12),
        log_format=r.get(
            "log",
            "format",
            str,
            "text",
            check=lambda v: "" if v in ("text", "json") else 'must be "text" or "json"',
        ),
        log_level=r.get(
            "log",
            "level",
            str,
            "info",
            check=lambda v: "" if v in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}",
        ),
        log_burst=r.get(
            "log",
            "burst",
            int,
            20,
            check=within(1, 100_000),
        ),
        log_window_s=r.number("log", "window_s", 10.0, 0.1, 3600),
        metrics_listen=(
            parse_address(metrics_listen, path, "metrics.listen")
            if metrics_listen is not None
            else None
        ),
        evidence_kept=r.get(
            "evidence",
            "max_kept",
            int,
            1000,
            check=within(1, 1_000_000),
        ),
    )


def _check_known_keys(path: Path, doc: dict[str, Any]) -> None:
    for table, value in doc.items():
        if table not in KNOWN_KEYS:
            known = ", ".join(sorted(KNOWN_KEYS))
            raise ConfigError(path, table, f"unknown table; known: {known}")
        keys = KNOWN_KEYS[table]
        if keys is None or not isinstance(value, dict):
            continue  # a non-table is reported where the table is read
        for key in value:
            if key not in keys:
                raise ConfigError(
                    path, f"{table}.{key}", f"unknown key; known: {', '.join(sorted(keys))}"
                )


def protocol_config(config: ReplicaConfig, config_type: type) -> Any:
    """The protocol's config object from the ``[<protocol>]`` table, with clear errors."""
    known = {f.name: f for f in dataclasses.fields(config_type)}
    options = dict(config.protocol_options)
    public = sorted(k for k in known if not k.startswith("unsafe"))
    for key, value in options.items():
        if key not in public:
            raise ConfigError(
                config.path,
                f"{config.protocol}.{key}",
                f"unknown option; known: {', '.join(public)}",
            )
        if isinstance(value, dict):
            if key != "batch":
                raise ConfigError(
                    config.path, f"{config.protocol}.{key}", "must be a value, not a table"
                )
            try:
                options[key] = BatchPolicy(**value)
            except TypeError as exc:
                raise ConfigError(config.path, f"{config.protocol}.batch", str(exc)) from None
    if "require_signatures" in known:
        options.setdefault("require_signatures", config.require_client_signatures)
    if "max_tx_bytes" in known:
        options.setdefault("max_tx_bytes", config.max_tx_bytes)
    try:
        return config_type(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(config.path, config.protocol, str(exc)) from None

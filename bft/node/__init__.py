"""The Trio replica runtime: configuration, the durable protocol log, and the replica that drives
one protocol core with real sockets, TLS and a ledger on disk."""

from .config import ConfigError, ReplicaConfig, load_replica_config, protocol_config
from .replica import Replica, ReplicaError, serve
from .wal import ProtocolLog

__all__ = [
    "ConfigError",
    "ProtocolLog",
    "Replica",
    "ReplicaConfig",
    "ReplicaError",
    "load_replica_config",
    "protocol_config",
    "serve",
]

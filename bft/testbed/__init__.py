"""The local testbed: a cluster directory (keys, TLS, configs), its replica processes, status,
a load generator, fault injection and ledger verification. ``bft testbed`` is built on it."""

from .layout import Cluster, LayoutError, init_cluster, load_cluster
from .load import LoadResult, drive, run_load
from .processes import Processes, ProcessState, TestbedError
from .status import ClusterView, ReplicaView, ask_statuses, assess, fault_tolerance
from .testbed import Testbed
from .verify import LedgerCheck, VerifyReport, verify_cluster

__all__ = [
    "Cluster",
    "ClusterView",
    "LayoutError",
    "LedgerCheck",
    "LoadResult",
    "ProcessState",
    "Processes",
    "ReplicaView",
    "Testbed",
    "TestbedError",
    "VerifyReport",
    "ask_statuses",
    "assess",
    "drive",
    "fault_tolerance",
    "init_cluster",
    "load_cluster",
    "run_load",
    "verify_cluster",
]

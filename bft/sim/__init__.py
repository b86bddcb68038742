"""The deterministic simulator: virtual time, a seeded network model with faults, crash and
restart from persisted state, twins, a client workload, and the invariant checkers. Pure: one
thread, no clock, no I/O; a run replays exactly from its seed."""

from .invariants import Violation
from .network import DelayModel, NetworkModel, OneWayCut, PartitionWindow, groups_of
from .simulator import CrashAt, CrashOnSend, Report, SimConfig, Simulation, run
from .twins import TwinsScenario, sample_scenario, set_partitions
from .workload import Outcome, WorkloadConfig

__all__ = [
    "CrashAt",
    "CrashOnSend",
    "DelayModel",
    "NetworkModel",
    "OneWayCut",
    "Outcome",
    "PartitionWindow",
    "Report",
    "SimConfig",
    "Simulation",
    "TwinsScenario",
    "Violation",
    "WorkloadConfig",
    "groups_of",
    "run",
    "sample_scenario",
    "set_partitions",
]

"""Switching a chain between a BFT mode and Raft, on one ledger (issue 5).

The operator's procedure (docs/raft.md): stop every replica, keep the ledgers, replace the
committee by one of the new mode (and its protocol logs by empty ones), restart. Here, at the
core and simulator level: a simulation of one mode builds a ledger; a simulation of the other
mode starts every replica from a copy of it (``LedgerState.of_blocks``) and keeps committing. The
result must verify end to end, each height range against the committee of the mode that wrote it:
the blocks link by hash across the switch, and each block's certificate is what its mode proves.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from bft.core.interface import ProtocolSpec
from bft.pbft import PbftConfig
from bft.protocols import spec
from bft.raft import RaftConfig
from bft.sim import CrashAt, NetworkModel, Report, SimConfig, Simulation, WorkloadConfig
from crypto import Committee
from ledger import Block, BlockError, CommitteeSchedule, verify_chain

from .properties import CheckedSimulation

MS = 1_000
CHAIN = "sim"
Segments = list[tuple[int, Committee]]
"""``(first height, committee)`` of each mode, in height order."""


def verify_segments(ledger: Sequence[Block], segments: Segments) -> None:
    """The ledger verifies end to end, each block against the committee of its height range,
    every link checked across the switches."""
    verify_chain(ledger, chain_id=CHAIN, committee=CommitteeSchedule(segments))


class Era:
    """One mode's simulation, started from the ledger the previous modes left."""

    def __init__(
        self,
        protocol: str,
        seed: int,
        ledger: Sequence[Block],
        segments: Segments,
        sent: set[bytes],
        *,
        lagging: int = 0,
        crashes: Sequence[CrashAt] = (),
        network: NetworkModel | None = None,
    ) -> None:
        self.spec: ProtocolSpec = spec(protocol)
        n = 3 if protocol == "raft" else 4
        base = len(ledger)
        earlier = tuple(segments)
        core_config: Any = None
        if protocol == "raft":
            core_config = RaftConfig(start_height=base + 1, earlier_committees=earlier)
        elif earlier:
            core_config = PbftConfig(start_height=base + 1, earlier_committees=earlier)
        config = SimConfig(
            spec=self.spec,
            n=n,
            seed=seed,
            # Clients of a later era have identities of their own.
            workload=WorkloadConfig(
                clients=3,
                requests_per_client=20,
                submit_every=40 * MS,
                client_prefix=b"era%d" % seed,
            ),
            core_config=core_config,
            crashes=list(crashes),
            network=network or NetworkModel(),
            initial_ledger=tuple(ledger),
            # The last replica may be behind: it catches up by fetching the earlier mode's blocks.
            initial_lag={n - 1: lagging},
            earlier_committees=earlier,
        )
        kind = CheckedSimulation if protocol == "raft" else Simulation
        self.sim: Simulation = kind(config)
        self.sim.workload.sent_raw |= sent
        self.segments: Segments = [*segments, (base + 1, self.sim.committee)]

    def run(self) -> Report:
        return self.sim.run()

    @property
    def ledger(self) -> list[Block]:
        return self.sim.nodes[0].ledger


def run_eras(
    protocols: Sequence[str], seed: int, **faults: Any
) -> tuple[list[Block], Segments, Era]:
    ledger: list[Block] = []
    segments: Segments = []
    sent: set[bytes] = set()
    for k, protocol in enumerate(protocols):
        era = Era(protocol, seed * 10 + k, ledger, segments, sent, **(faults if k else {}))
        report = era.run()
        assert report.ok, report.describe()
        assert report.stats["acked"] == 60
        new = era.ledger
        assert new[: len(ledger)] == ledger  # the new mode continued from the last block
        assert len(new) > len(ledger)
        assert {b.header.protocol for b in new[len(ledger) :]} == {protocol}
        ledger, segments, sent = list(new), era.segments, era.sim.workload.sent_raw
    return ledger, segments, era


@pytest.mark.parametrize(
    "protocols", [("pbft", "raft"), ("raft", "pbft"), ("pbft", "raft", "pbft", "raft")]
)
def test_a_chain_switches_mode_and_still_verifies_end_to_end(protocols: tuple[str, ...]) -> None:
    ledger, segments, _ = run_eras(protocols, seed=1)
    verify_segments(ledger, segments)
    # One committee cannot verify a mixed chain: its protocol pins what a certificate must be,
    # and each committee signed only its own range.
    for _, committee in segments:
        with pytest.raises(BlockError):
            verify_chain(ledger, chain_id=CHAIN, committee=committee)
    # Without committees (hash links and Merkle roots only) it verifies as one chain.
    assert verify_chain(ledger, chain_id=CHAIN).height == len(ledger)


def test_after_switching_to_raft_a_lagging_replica_fetches_the_bft_blocks() -> None:
    """The replica that stopped behind catches up from the Raft leader's ledger, checking the
    PBFT blocks against the PBFT committee (``RaftConfig.earlier_committees``)."""
    ledger, segments, era = run_eras(("pbft", "raft"), seed=2, lagging=6)
    verify_segments(ledger, segments)
    assert era.sim.nodes[2].core.status().extra["blocks_fetched"] >= 6


def test_raft_after_a_switch_survives_a_leader_crash_and_loss() -> None:
    rng = random.Random(3)
    crash = CrashAt(rng.randrange(3), 300 * MS, 700 * MS)
    network = NetworkModel(drop=0.05, lossy_until=1_500 * MS)
    ledger, segments, era = run_eras(("pbft", "raft"), seed=3, crashes=[crash], network=network)
    assert era.sim.stats["crashes"] == 1
    verify_segments(ledger, segments)
